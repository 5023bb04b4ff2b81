"""The compiled form of an exported program's nodes, and what runs them: each node a :class:`Step` (the
operator, its compiled arguments, where its result goes), an argument ``("ref", slot)``, ``("const",
value)`` or ``("list", [...])``. serving/program.py compiles the graph into these and runs them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from serving.pt2_archive import DTYPES, LAYOUTS, MEMORY_FORMATS, Unsupported

# The symbolic-size operators torch.export may emit (serialize.py's _SYM_OPS), by their serialized name.
SYM_OPS: dict[str, Callable[..., Any]] = {
    **{
        f"_operator.{name}": getattr(operator, name)
        for name in (
            "eq",
            "ne",
            "le",
            "ge",
            "lt",
            "gt",
            "neg",
            "pos",
            "mul",
            "add",
            "sub",
            "floordiv",
            "mod",
            "pow",
            "truediv",
            "and_",
            "or_",
            "lshift",
            "rshift",
        )
    },
    "math.trunc": math.trunc,
    **{
        f"torch.{name}": getattr(torch, name)
        for name in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt")
    },
}


class Step(NamedTuple):
    op: Callable[..., Any]
    args: list[Any]
    kwargs: dict[str, Any]
    store: Callable[[list[Any], Any], None]
    target: str
    output: int | None
    """The slot of the node's one tensor output, else None."""


def constants_of(compiled: tuple[str, Any]) -> Any:
    """The constant values in a compiled argument (references to computed values are left out)."""
    kind, value = compiled
    if kind == "const":
        return value
    if kind == "list":
        return [item for item in (constants_of(entry) for entry in value) if item is not None]
    return None


def flat_constants(compiled: list[tuple[str, Any]]) -> list[Any]:
    """Every constant in a list of compiled arguments, lists flattened."""
    found = []
    for kind, value in compiled:
        if kind == "const":
            found.extend(value if isinstance(value, list) else [value])
        elif kind == "list":
            found.extend(flat_constants(value))
    return found


def guard_writes(
    op: Callable[..., Any],
    target: str,
    positions: list[int],
    names: list[str],
    state_storages: Callable[[], frozenset[int]],
) -> Callable[..., Any]:
    """``op``, refusing at run time to write into the program's state: what the load-time alias check
    cannot see (storage shared through an operator that does not declare it) still cannot change it."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        state = state_storages()
        for value in [*(args[i] for i in positions), *(kwargs[n] for n in names if n in kwargs)]:
            for tensor in value if isinstance(value, list | tuple) else (value,):
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() in state:
                    raise RuntimeError(
                        f"{target} writes to the program's own weights, buffers or constants: "
                        "a model file may not change its state"
                    )
        return op(*args, **kwargs)

    return guarded


def resolve(compiled: tuple[str, Any], env: list[Any]) -> Any:
    kind, value = compiled
    if kind == "ref":
        return env[value]
    if kind == "const":
        return value
    return [resolve(item, env) for item in value]


def refs(compiled: list[tuple[str, Any]]) -> list[int]:
    """The slots a list of compiled arguments reads."""
    slots = []
    for kind, value in compiled:
        if kind == "ref":
            slots.append(value)
        elif kind == "list":
            slots.extend(refs(value))
    return slots


RELUS = ("torch.ops.aten.relu.default", "torch.ops.aten.relu_.default")


def conv2d_arguments(step: Step) -> tuple[Any, ...] | None:
    """(x, w, b, stride, padding, dilation, groups) of an ``aten.conv2d`` call with constant geometry."""
    if step.target != "torch.ops.aten.conv2d.default" or step.kwargs or not 2 <= len(step.args) <= 7:
        return None
    padded = [*step.args, *[("const", None)] * (7 - len(step.args))]
    x, w, b, geometry = padded[0], padded[1], padded[2], padded[3:]
    defaults = ([1, 1], [0, 0], [1, 1])
    pairs = []
    for (kind, value), default in zip(geometry[:3], defaults, strict=True):
        if kind != "const":
            return None
        value = default if value is None else value
        if not isinstance(value, list) or not 1 <= len(value) <= 2 or not all(isinstance(v, int) for v in value):
            return None
        pairs.append(("const", value * 2 if len(value) == 1 else value))
    kind, groups = geometry[3]
    if kind != "const" or not isinstance(groups, int | None):
        return None
    return x, w, b, *pairs, ("const", 1 if groups is None else groups)


def store_in(slot: int) -> Callable[[list[Any], Any], None]:
    def store(env: list[Any], result: Any) -> None:
        env[slot] = result

    return store


def discard(env: list[Any], result: Any) -> None:
    pass


def check_dims(tensor: torch.Tensor, dims: list[int | tuple[int, int] | None], slot: int) -> None:
    """What ExportedProgram.module() checks before running: rank, fixed sizes, dynamic sizes' ranges."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"input {slot} must be a tensor, got {type(tensor).__name__}")
    if tensor.dim() != len(dims):
        raise ValueError(f"expected a tensor of rank {len(dims)}, got shape {list(tensor.shape)}")
    for axis, (size, dim) in enumerate(zip(tensor.shape, dims, strict=True)):
        if isinstance(dim, int) and size != dim:
            raise ValueError(f"dimension {axis} must be {dim}, got shape {list(tensor.shape)}")
        if isinstance(dim, tuple) and not dim[0] <= size <= dim[1]:
            raise ValueError(f"dimension {axis} must lie in [{dim[0]}, {dim[1]}], got shape {list(tensor.shape)}")


def fused_plan(steps: list[Step], kept: set[int], fused_op: Any) -> tuple[list[Step], int]:
    """``steps`` with each 2-D convolution whose one use is a ReLU run as ``fused_op`` (oneDNN's
    ``_convolution_pointwise`` with the ReLU as its post-op), and how many pairs were fused. ``kept``: the
    slots the program returns, which are never fused away."""
    uses: dict[int, list[int]] = {}
    for index, step in enumerate(steps):
        for slot in refs([*step.args, *step.kwargs.values()]):
            uses.setdefault(slot, []).append(index)
    plan: list[Step] = []
    dropped: set[int] = set()
    for index, step in enumerate(steps):
        if index in dropped:
            continue
        conv = conv2d_arguments(step)
        readers = uses.get(step.output, []) if conv is not None and step.output is not None else []
        relu = steps[readers[0]] if len(readers) == 1 else None
        if (
            conv is None
            or step.output in kept
            or relu is None
            or relu.kwargs
            or relu.output is None
            or (relu.target not in RELUS or relu.args != [("ref", step.output)])
        ):
            plan.append(step)
            continue
        x, w, b, stride, padding, dilation, groups = conv
        arguments = [x, w, b, padding, stride, dilation, groups, ("const", "relu"), ("const", []), ("const", None)]
        plan.append(
            Step(fused_op.default, arguments, {}, relu.store, "mkldnn._convolution_pointwise(relu)", relu.output)
        )
        dropped.add(readers[0])
    return plan, len(dropped)


def compile_value(arg: dict[str, Any], slot_of: Callable[[str], int]) -> Any:
    """A serialized argument compiled: ('ref', slot), ('list', [compiled...]) or ('const', value); ``slot_of``
    gives the slot of a value computed earlier (Unsupported if none is)."""
    ((kind, value),) = arg.items()
    if kind == "as_tensor":
        return ("ref", slot_of(value["name"]))
    if kind in ("as_sym_int", "as_sym_float", "as_sym_bool"):
        ((sym_kind, sym),) = value.items()
        return ("ref", slot_of(sym)) if sym_kind == "as_name" else ("const", sym)
    if kind == "as_tensors":
        return ("list", [("ref", slot_of(t["name"])) for t in value])
    if kind == "as_optional_tensors":
        return (
            "list",
            [("const", None) if "as_none" in t else ("ref", slot_of(t["as_tensor"]["name"])) for t in value],
        )
    if kind in ("as_sym_ints", "as_sym_floats", "as_sym_bools"):
        return ("list", [compile_value({kind.removesuffix("s"): item}, slot_of) for item in value])
    if kind == "as_none":
        return ("const", None)
    if kind in ("as_int", "as_float", "as_bool", "as_string"):
        return ("const", value)
    if kind in ("as_ints", "as_floats", "as_bools", "as_strings"):
        return ("const", list(value))
    if kind == "as_scalar_type":
        return ("const", DTYPES[value])
    if kind == "as_layout":
        return ("const", LAYOUTS[value])
    if kind == "as_memory_format":
        return ("const", MEMORY_FORMATS[value])
    if kind == "as_device":
        return ("const", torch.device(value["type"], value.get("index")))
    if kind == "as_complex":
        return ("const", complex(value["real"], value["imag"]))
    raise Unsupported(f"an argument of kind {kind}")
