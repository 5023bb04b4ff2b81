"""The Open Inference Protocol clients' venv, .venv-clients (requirements/clients.txt): made once, reused while
the requirements file is unchanged, and started in the background when the test session starts (about 80 s of
pip on an idle machine), so that it is ready by the time tests/serving/test_oip.py needs it."""

from __future__ import annotations

from pathlib import Path

from tests.pinned_venv import PinnedVenv

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / ".venv-clients"
REQUIREMENTS = REPO / "requirements" / "clients.txt"
_VENV = PinnedVenv(CLIENTS, REQUIREMENTS, "OIP clients")
start = _VENV.start
python = _VENV.python
