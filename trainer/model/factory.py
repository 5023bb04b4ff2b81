"""User model factories: ``package.module:function`` imported from the job's code directory (or an installed
package) and called as ``function(num_classes=, input_shape=)``; every way that goes wrong is a
``ConfigError`` naming the hyperparameter and the user's file and line (docs/trainer.md)."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from trainer.model.failures import config_error, describe


@contextlib.contextmanager
def _on_sys_path(code_dir: Path | None) -> Iterator[None]:
    """``code_dir`` first on sys.path while the factory is imported and called, then as before."""
    if code_dir is None or not code_dir.is_dir():
        yield
        return
    entry = str(code_dir.resolve())
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # the directory may be newer than the finders' caches
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _where(code_dir: Path | None) -> str:
    on_path = "on the Python path (installed packages, PYTHONPATH)"
    if code_dir is None:
        return on_path
    missing = "" if code_dir.is_dir() else " (which does not exist)"
    return f"in the job's code directory {code_dir}{missing} or {on_path}"


def _import_module(spec: str, module_name: str, code_dir: Path | None) -> ModuleType:
    top = module_name.split(".")[0]
    if code_dir is not None and top in sys.modules and ((code_dir / f"{top}.py").exists() or (code_dir / top).is_dir()):
        found = getattr(sys.modules[top], "__file__", None) or "a built-in module"
        if found == "a built-in module" or not Path(found).resolve().is_relative_to(code_dir.resolve()):
            raise config_error(
                spec, f"module '{top}' in {code_dir} has the name of a module already imported from {found}; rename it"
            )
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise config_error(spec, f"no module '{module_name}' {_where(code_dir)}") from None
        raise config_error(spec, f"importing '{module_name}' failed: {describe(exc)}") from None
    except Exception as exc:  # the user's module raised while being imported (SyntaxError included)
        raise config_error(spec, f"importing '{module_name}' failed: {describe(exc)}") from None


def call_factory(spec: str, code_dir: Path | None, *, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    module_name, _, function_name = spec.partition(":")
    call = f"{function_name}(num_classes={num_classes}, input_shape={input_shape})"
    with _on_sys_path(code_dir):
        module = _import_module(spec, module_name, code_dir)
        where = getattr(module, "__file__", None) or module_name
        factory = getattr(module, function_name, None)
        if factory is None:
            raise config_error(spec, f"module '{module_name}' ({where}) has no function '{function_name}'")
        if not callable(factory):
            raise config_error(spec, f"'{function_name}' in {where} is not callable ({type(factory).__name__})")
        try:
            net = factory(num_classes=num_classes, input_shape=input_shape)
        except Exception as exc:
            raise config_error(spec, f"{call} raised {describe(exc)}") from None
    if not isinstance(net, nn.Module):
        raise config_error(
            spec, f"{call} returned {type(net).__module__}.{type(net).__qualname__}, not a torch.nn.Module"
        )
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in net.parameters()):
        _materialize(spec, net, input_shape)
    if not any(p.requires_grad for p in net.parameters()):
        raise config_error(spec, f"{call} returned a {type(net).__name__} without trainable parameters")
    return net


def _materialize(spec: str, net: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Give lazy modules (nn.LazyLinear, ...) their shapes now: the optimizer needs real parameters."""
    modes = [(module, module.training) for module in net.modules()]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise config_error(spec, f"the model fails on a batch of shape {[2, *input_shape]}: {describe(exc)}") from None
    finally:
        for module, training in modes:
            module.training = training
