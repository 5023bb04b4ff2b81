"""The management API: off by default, token on every call, registration only from inside the model store."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from tests.conftest import free_port, http_request, port_is_free

IMAGE = [[0] * 8 for _ in range(8)]


@pytest.fixture
def store(tiny_artifact_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(tiny_artifact_template, root / "digits" / "1")
    shutil.copytree(tiny_artifact_template, root / "spare")
    (tmp_path / "outside").mkdir()
    shutil.copytree(tiny_artifact_template, tmp_path / "outside" / "model")
    (root / "escape").symlink_to(tmp_path / "outside" / "model")
    _mar(root / "slip.mar", {"../evil.py": b"print('pwned')"})
    _mar(root / "absolute.mar", {"/tmp/evil.py": b"print('pwned')"})
    _mar(root / "link.mar", {"handler.py": b"x"}, link="model.pt")
    return root


def _mar(path: Path, members: dict[str, bytes], link: str | None = None) -> None:
    manifest = {"model": {"modelName": path.stem, "modelVersion": "1.0", "handler": "handler.py"}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")


@pytest.fixture
def managed(store: Path, tmp_path: Path, start_server):
    token_file = tmp_path / "secrets" / "token"
    port = free_port()
    server = start_server(
        store,
        args=(
            "--model-store",
            str(store),
            "--models",
            "digits=digits",
            "--management-port",
            str(port),
            "--management-token-file",
            str(token_file),
        ),
    )
    server.wait_ready()
    token = token_file.read_text().strip()

    def call(method: str, path: str, token_value: str | None = token) -> tuple[int, dict]:
        status, _, raw = http_request(
            port, method, path, headers={"Authorization": f"Bearer {token_value}"} if token_value else {}
        )
        return status, json.loads(raw or b"null")

    return server, call, token_file, token, port


def _predict(server, path: str = "/predictions/digits") -> int:
    return server.request("POST", path, json.dumps([IMAGE]).encode(), {"Content-Type": "application/json"})[0]


@pytest.mark.slow
def test_off_by_default(tiny_artifact: Path, start_server) -> None:
    server = start_server(tiny_artifact)
    server.wait_ready()
    for method, path in [("GET", "/models"), ("POST", "/models?url=model"), ("DELETE", "/models/model/1")]:
        status, _, body = server.request(method, path)
        assert status in (404, 405), (method, path, status)
        assert json.loads(body)["code"] in ("not_found", "method_not_allowed")
    assert "management API" not in server.output()


@pytest.mark.slow
def test_token_file_is_private_and_the_token_never_logged(managed) -> None:
    server, call, token_file, token, _ = managed
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token) >= 32
    assert call("GET", "/models")[0] == 200
    assert call("POST", "/models?url=spare")[0] == 200
    assert token not in server.output(), "the token must never reach the log"
    assert str(token_file) in server.output(), "the log says where the token is"
    assert not [p for p in token_file.parent.iterdir() if p.name != "token"], "no temporary file left behind"


@pytest.mark.slow
def test_missing_or_wrong_token_is_401(managed) -> None:
    _, call, _, token, _ = managed
    for bad in (None, "", "wrong", token[:-1], token + "x", token.upper()):
        for method, path in [
            ("GET", "/models"),
            ("POST", "/models?url=spare"),
            ("DELETE", "/models/digits/1"),
            ("PUT", "/models/digits/1/set-default"),
            ("GET", "/nowhere"),
        ]:
            status, body = call(method, path, bad)
            assert status == 401, (bad, method, path)
            assert body["code"] == "unauthorized"
    assert call("GET", "/models/digits")[0] == 200, "nothing above changed anything"


@pytest.mark.slow
def test_only_paths_inside_the_store_can_be_registered(managed, store: Path) -> None:
    server, call, *_ = managed
    for url, message in [
        ("http://169.254.169.254/latest/meta-data", "is a URL"),
        ("https://example.com/model.mar", "is a URL"),
        ("file:///etc/passwd", "is a URL"),
        ("s3://bucket/model.tar.gz", "is a URL"),
        ("//evil.example/model.mar", "is a URL"),
        ("../outside/model", "without '..'"),
        ("digits/../../outside/model", "without '..'"),
        ("%2e%2e/outside/model", "without '..'"),
        ("/etc", "relative path inside the model store"),
        (str(store / "spare"), "relative path inside the model store"),
        ("escape", "leads outside the model store"),
        ("", "give url="),
        ("missing", "does not exist"),
    ]:
        status, body = call("POST", f"/models?url={url}")
        assert status == 400, (url, body)
        assert body["code"] == "invalid_registration"
        assert message in body["message"], (url, body)
    assert call("GET", "/models")[1] == {"models": [{"modelName": "digits", "defaultVersion": "1", "versions": ["1"]}]}
    assert _predict(server) == 200


@pytest.mark.slow
def test_a_version_folder_linked_out_of_the_store_is_refused(managed, store: Path, tmp_path: Path) -> None:
    _, call, *_ = managed
    (store / "versions").mkdir()
    shutil.copytree(store / "digits" / "1", store / "versions" / "1")
    (store / "versions" / "2").symlink_to(tmp_path / "outside" / "model")
    status, body = call("POST", "/models?url=versions&model_name=versions")
    assert status == 400
    assert "links outside the model store" in body["message"]
    assert call("GET", "/models")[1] == {"models": [{"modelName": "digits", "defaultVersion": "1", "versions": ["1"]}]}


@pytest.mark.slow
def test_a_comma_in_url_registers_nothing_else_and_replaces_nothing(managed, store: Path, tmp_path: Path) -> None:
    """``url=spare,digits=spare2`` used to register 'spare' and silently replace the loaded 'digits'."""
    server, call, *_ = managed
    shutil.copytree(store / "spare", store / "spare2")
    manifest = store / "spare2" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "metrics": {"replaced": 1}}))
    status, body = call("POST", "/models?url=spare,digits=spare2&model_name=spare")
    assert status == 400
    assert "does not exist" in body["message"]
    assert call("GET", "/models")[1] == {"models": [{"modelName": "digits", "defaultVersion": "1", "versions": ["1"]}]}
    assert "replaced" not in call("GET", "/models/digits/1")[1][0]["metrics"]
    assert _predict(server) == 200


@pytest.mark.slow
def test_archive_slip_is_refused_and_serving_goes_on(managed, tmp_path: Path) -> None:
    server, call, *_ = managed
    for name in ("slip.mar", "absolute.mar", "link.mar"):
        status, body = call("POST", f"/models?url={name}")
        assert status == 400, (name, body)
        assert "refusing it" in body["message"], body
    assert not (tmp_path / "evil.py").exists()
    assert not Path("/tmp/evil.py").exists()
    assert _predict(server) == 200


@pytest.mark.slow
def test_register_set_default_and_unregister(managed, store: Path) -> None:
    server, call, *_ = managed
    shutil.copytree(store / "digits" / "1", store / "digits" / "2")
    status, body = call("POST", "/models?url=digits&model_name=digits")
    assert status == 409, "version 1 is already registered"
    assert "already registered" in body["message"]

    assert call("POST", "/models?url=spare&model_name=other")[0] == 200
    assert _predict(server, "/predictions/other") == 200
    assert _predict(server, "/predictions/other/1") == 200
    status, body = call("GET", "/models/other")
    assert status == 200
    assert body[0]["modelVersion"] == "1"
    assert body[0]["kind"] == "torch.export"
    assert len(body[0]["sha256"]) == 64

    assert call("PUT", "/models/other/7/set-default")[0] == 404
    assert call("DELETE", "/models/other/1")[0] == 200
    assert _predict(server, "/predictions/other") == 404
    assert call("DELETE", "/models/other/1")[0] == 404
    assert _predict(server) == 200, "the other model is untouched"


def test_management_port_must_differ_and_token_file_must_be_sane(tiny_artifact: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--port",
            str(port),
            "--model-dir",
            str(tiny_artifact),
            "--management-port",
            str(port),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: --management-port {port} is the inference port: pick another one"
    assert port_is_free(port)

    short = tmp_path / "short"
    short.write_text("abc\n")
    os.chmod(short, 0o600)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--port",
            str(free_port()),
            "--model-dir",
            str(tiny_artifact),
            "--management-port",
            str(free_port()),
            "--management-token-file",
            str(short),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: management token: management token file {short} holds fewer than 16 characters")
    )
    assert "abc" not in result.stderr


@pytest.mark.slow
def test_the_documented_example_adds_a_version_beside_the_loaded_ones(
    store: Path, tmp_path: Path, start_server
) -> None:
    """docs/serving.md's management example, literally: resnet/1 and resnet/2 loaded, resnet/3 added to the
    store, registered under the same name, made the default, and resnet/2 removed."""
    for version in ("1", "2"):
        shutil.copytree(store / "digits" / "1", store / "resnet" / version)
    token_file, port = tmp_path / "token", free_port()
    server = start_server(
        store,
        args=(
            "--model-store",
            str(store),
            "--models",
            "resnet=resnet",
            "--management-port",
            str(port),
            "--management-token-file",
            str(token_file),
        ),
    )
    server.wait_ready()
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}

    def call(method: str, path: str) -> tuple[int, dict]:
        status, _, raw = http_request(port, method, path, headers=headers)
        return status, json.loads(raw)

    shutil.copytree(store / "digits" / "1", store / "resnet" / "3")
    assert call("POST", "/models?url=resnet/3&model_name=resnet") == (
        200,
        {"status": "Model 'resnet' registered", "versions": ["3"]},
    )
    assert call("PUT", "/models/resnet/3/set-default")[0] == 200
    assert call("DELETE", "/models/resnet/2")[0] == 200
    assert call("GET", "/models")[1] == {
        "models": [{"modelName": "resnet", "defaultVersion": "3", "versions": ["1", "3"]}]
    }
    assert _predict(server, "/predictions/resnet") == 200
