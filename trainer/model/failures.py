"""How a failure in the model's own code becomes one line: what was raised, and where in the user's file.

torch's messages span pages (partial graphs, hints, links); these helpers keep the first line that says
something and the innermost frame outside torch, Python and this package's own callers of user code.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback

import torch

from trainer.errors import ConfigError

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_STDLIB_DIR = sysconfig.get_paths()["stdlib"] + os.sep
_PACKAGE_DIR = os.path.dirname(__file__)
"""Where this package's files are, as their frames name them."""
_NOISE = (
    "for more information",
    "for extended logs",
    "if you suspect",
    "for c++ stack trace",
    "consider using",
    "the error above",
    "caused by",
    "the following call raised",
    "user code",
)
_OWN_FRAMES = frozenset({"check_exportable", "call_factory", "_import_module"})
"""Functions of this package that call into the user's code: a failure is never *in* them."""


def config_error(spec: str, cause: str) -> ConfigError:
    return ConfigError(f"hyperparameter 'model' ({spec!r}): {one_line(cause)}")


def first_useful_line(text: str) -> str:
    for raw in text.splitlines():
        line = re.sub(r"^-\s+", "", raw.strip())  # a bullet of torch's lists
        line = re.split(r"\s+For more information", line)[0].strip()
        if line and not line.lower().startswith(_NOISE):
            return line
    return ""


def user_frame(exc: BaseException) -> str:
    """Where in the model's own code the failure happened: the innermost frame outside torch and Python."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        name = frame.filename
        stdlib = name.startswith(_STDLIB_DIR) and "-packages" not in name
        if (
            stdlib
            or name.startswith((_TORCH_DIR, "<"))
            or (os.path.dirname(name) == _PACKAGE_DIR and frame.name in _OWN_FRAMES)
        ):
            continue
        code = re.sub(r"\s+#.*$", "", frame.line or "").strip()  # the line, without its comment
        code = f": `{code}`" if code else ""
        return f"{name}:{frame.lineno} in {frame.name}{code}"
    return ""


def describe(exc: BaseException) -> str:
    """``Type: message (at file:line in function)`` for an exception raised by the user's code."""
    message = first_useful_line(str(exc))
    where = user_frame(exc)
    return f"{type(exc).__name__}{': ' + message if message else ''}" + (f" (at {where})" if where else "")


def one_line(text: str) -> str:
    return " ".join(text.split())
