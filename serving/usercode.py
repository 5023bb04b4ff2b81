"""Import the Python files that ship inside a model (a handler, ``inference.py``, a model definition).

Every model's files are imported under a name of their own, with their folder on ``sys.path`` (TorchServe
and SageMaker both put it there, so sibling imports work), after forgetting any module named like one of
the folder's files: two models that each ship a ``model.py`` must never share one in ``sys.modules``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def import_model_file(path: Path, unique: str) -> ModuleType:
    """Execute ``path`` as module ``unique``; ImportError when it is not a Python file."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    for sibling in path.parent.glob("*.py"):
        sys.modules.pop(sibling.stem, None)
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module
