"""The project is installed into .venv as a package (make setup: editable, no dependencies), so every room imports
from any folder and no module puts the repository on sys.path itself."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO, source_files

ROOMS = ("infra", "trainer", "serving", "ops")
USER_CODE = {
    "serving/usercode.py": "a model's own code/ folder, as TorchServe and SageMaker put it on sys.path",
    "trainer/model/factory.py": "a user model factory's folder, for the time it is imported",
}
"""Modules that put a user's folder, never this repository, on sys.path."""


def test_every_room_imports_from_a_folder_outside_the_repository(tmp_path) -> None:
    code = "import infra.policy, infra.engine, trainer.archive, serving.errors, ops.errors; print(infra.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"run make setup, which installs the project: {out.stderr.strip()[-300:]}"
    assert out.stdout.strip() == str(REPO / "infra" / "__init__.py")


def test_no_module_edits_sys_path_but_for_user_code() -> None:
    editing = sorted(
        str(path.relative_to(REPO))
        for path in source_files(*ROOMS)
        if re.search(r"sys\.path\.(insert|append|extend)|sys\.path\s*=", path.read_text())
    )
    assert editing == sorted(USER_CODE), "only user-code loaders may edit sys.path: the project is a package"


def test_the_policy_pack_starts_as_pulumi_runs_it_with_only_its_folder_on_sys_path(tmp_path) -> None:
    """`pulumi preview --policy-pack infra/policy` runs the folder's __main__.py; the pack then serves gRPC and prints
    its port (pulumi-policy 1.21.0, pulumi_policy/policy.py: the port on stdout, for the engine to read)."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "infra" / "policy" / "__main__.py")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert line.isdigit(), f"the policy pack did not start: {err.strip()[-300:]}"
