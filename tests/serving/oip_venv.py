"""The Open Inference Protocol clients' venv, .venv-clients (requirements/clients.txt): made once, reused while
the requirements file is unchanged, and started in the background when the test session starts (about 80 s of
pip on an idle machine), so that it is ready by the time tests/serving/test_oip.py needs it."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / ".venv-clients"
REQUIREMENTS = REPO / "requirements" / "clients.txt"
_result: dict[str, str] = {}
_thread: threading.Thread | None = None


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _ready() -> bool:
    marker = CLIENTS / ".installed"
    return (CLIENTS / "bin" / "python").exists() and marker.exists() and marker.read_text() == _digest()


def _make() -> None:
    try:
        venv.create(CLIENTS, with_pip=True, clear=True)
        done = subprocess.run([str(CLIENTS / "bin" / "python"), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                              capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode == 0:
            (CLIENTS / ".installed").write_text(_digest())
        else:
            _result["error"] = f"installing the OIP clients failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    except Exception as exc:  # reported by python() to the test that needs it, not lost in a thread
        _result["error"] = f"making {CLIENTS} failed: {type(exc).__name__}: {exc}"


def start() -> None:
    """Begin making the venv in a thread, when it is not there already (called at the session's start)."""
    global _thread
    if _thread is None and not _ready():
        _thread = threading.Thread(target=_make, name="oip-clients-venv", daemon=True)
        _thread.start()


def python() -> Path:
    """The venv's interpreter, once it is made (waiting for the background install, or making it now)."""
    start()
    if _thread is not None:
        _thread.join()
    assert "error" not in _result, _result.get("error")
    assert _ready(), f"{CLIENTS} is not complete"
    return CLIENTS / "bin" / "python"
