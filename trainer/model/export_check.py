"""The export check: before the first step, prove the model can be shipped, i.e. ``torch.export``-ed the way
:func:`trainer.artifact.export_program` will export it at the end, and fail with one line if not."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
from collections.abc import Iterator
from multiprocessing.connection import Connection

import torch
from torch import nn

from trainer.artifact import MAX_BATCH
from trainer.errors import ConfigError
from trainer.model.build import ModelSpec
from trainer.model.failures import describe, first_useful_line, user_frame

_EXPORT_HINT = (
    "make forward() free of data-dependent Python control flow (if/while on tensor values, .item(), "
    ".tolist(), numpy: use torch.where or torch.cond) and of a fixed batch size (x.flatten(1), not "
    "x.view(2, -1)); see docs/trainer.md"
)


def check_exportable(
    model: nn.Module, example: torch.Tensor, *, spec: str | None = None, num_classes: int | None = None
) -> None:
    """Fail before training when the model could not be shipped: a dry run of the artifact export.

    Runs a deep copy of ``model`` on CPU in eval mode on ``example`` (a batch of raw pixels) and
    ``torch.export``s it exactly as ``trainer.artifact.export_program`` will (dynamic batch dimension
    1..MAX_BATCH). ``model`` itself, its weights, BatchNorm statistics, train/eval mode and device, and
    the RNG state are untouched. Raises ``ConfigError`` naming what failed and where in the user's code.
    ``num_classes``, when given, is checked against the width of the logits.
    """
    spec = spec or getattr(model, "spec", None) or type(model).__name__
    if example.shape[0] < 2:
        # export specialises a dimension of size 1, so the dynamic batch needs an example of 2 or more
        example = example[:1].expand(2, *example.shape[1:])
    example = example.detach().to("cpu", torch.float32)
    with torch.random.fork_rng(devices=[]):
        try:
            dry = copy.deepcopy(model).cpu().eval()
        except Exception as exc:
            raise ConfigError(f"model '{spec}' cannot be copied for the export check: {describe(exc)}") from None
        try:
            with torch.no_grad():
                out = dry(example)
        except Exception as exc:
            raise ConfigError(
                f"model '{spec}' fails on a batch of shape {list(example.shape)} (raw pixels, "
                f"float32 NCHW): {describe(exc)}"
            ) from None
        _check_logits(spec, out, len(example), num_classes)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        try:
            with _quiet_torch():
                torch.export.export(dry, (example,), dynamic_shapes=({0: batch},))
        except Exception as exc:
            raise ConfigError(
                f"model '{spec}' cannot be exported with torch.export: {_export_cause(exc)}; {_EXPORT_HINT}"
            ) from None


def _check_logits(spec: str, out: object, batch: int, num_classes: int | None) -> None:
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            f"model '{spec}': forward() must return one tensor of logits [N, classes], got {type(out).__name__}"
        )
    expected = f"[{batch}, {num_classes if num_classes is not None else 'classes'}]"
    if out.ndim != 2 or out.shape[0] != batch or (num_classes is not None and out.shape[1] != num_classes):
        raise ConfigError(
            f"model '{spec}': forward() returned logits of shape {list(out.shape)} for a batch of "
            f"{batch}; expected {expected}"
        )
    if not out.is_floating_point():
        raise ConfigError(f"model '{spec}': forward() returned {out.dtype} logits; expected floating point")


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch.export prints the partial graph and logs warnings on failure; our one line says it better."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _export_cause(exc: BaseException) -> str:
    text = str(exc)
    if match := re.search(r"specialized it to be a constant \((\d+)\)", text):
        return (
            f"forward() fixes the batch size to {match.group(1)} (the exported program must take any batch "
            f"of 1..{MAX_BATCH})"
        )
    line = first_useful_line(text) or type(exc).__name__
    if line.startswith("Constraints violated"):
        # e.g. "Not all values of batch = L['x'].size()[0] in the specified range batch <= 4096 satisfy ..."
        detail = first_useful_line(text.split("\n", 1)[1] if "\n" in text else "")
        detail = re.sub(r"L\[[^\]]*\](?:\[[^\]]*\])*\.size\(\)\[0\]", "N", detail)
        return f"forward() does not work for every batch size of 1..{MAX_BATCH}" + (f" ({detail})" if detail else "")
    line = re.sub(r"\s*\(unhinted: .*$", "", line)
    line = re.sub(r"\s*\(Size-like symbols: .*$", "", line)
    if match := re.match(
        r"Could not (?:guard on|extract specialized integer from) (data-dependent expression .*?)\.?$", line
    ):
        line = f"a Python branch or number depends on tensor values ({match.group(1)})"
    else:
        line = f"{type(exc).__name__}: {line}"
    where = user_frame(exc)
    return line + (f" at {where}" if where else "")


def _isolated_check(conn: Connection, model: ModelSpec, example: torch.Tensor) -> None:
    try:
        check_exportable(model.build(), example, spec=model.name, num_classes=model.num_classes)
    except ConfigError as exc:
        conn.send(str(exc))
    except Exception as exc:  # a bug in the check itself: report it rather than hang the parent
        conn.send(f"model '{model.name}' export check crashed: {describe(exc)}")
    else:
        conn.send(None)
    finally:
        conn.close()


def check_exportable_isolated(model: ModelSpec, example: torch.Tensor) -> None:
    """:func:`check_exportable` on the model ``model`` describes, built in a fresh (spawned) process.

    torch.export's machinery stays in memory once imported (docs/trainer.md, "Measured", has how much);
    checking in a child keeps the training process as lean as a bare loop. Exportability depends on
    the architecture, not the weights, so a freshly built model answers the question.
    """
    import multiprocessing

    spec = model.name
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_isolated_check, args=(send, model, example), daemon=True)
    child.start()
    send.close()
    try:
        message = receive.recv()
    except EOFError:
        child.join()
        raise ConfigError(f"model '{spec}' export check died with exit code {child.exitcode}") from None
    child.join()
    if message is not None:
        raise ConfigError(message)
