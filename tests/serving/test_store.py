"""Several models and versions from a model store: layout, confinement to the store, and routing."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from serving.artifact import load_artifact
from serving.store import LayoutError, ModelRef, plan
from tests.conftest import REPO, free_port
from tests.serving.conftest import app_client

IMAGE = [[0] * 8 for _ in range(8)]


@pytest.fixture
def store(tiny_artifact_template: Path, tmp_path: Path) -> Path:
    """digits/1, digits/2 (versions), mnist (one artifact), tiny.tar.gz (an archive) and a README."""
    root = tmp_path / "store"
    shutil.copytree(tiny_artifact_template, root / "digits" / "1")
    shutil.copytree(tiny_artifact_template, root / "digits" / "2")
    shutil.copytree(tiny_artifact_template, root / "mnist")
    with tarfile.open(root / "tiny.tar.gz", "w:gz") as tar:
        for path in sorted(tiny_artifact_template.iterdir()):
            tar.add(path, arcname=path.name)
    (root / "README.md").write_text("not a model")
    (root / ".cache").mkdir()
    return root


def test_a_whole_store_is_planned(store: Path) -> None:
    refs = plan(Path("/unused"), store, None)
    assert [(r.name, r.version) for r in refs] == [("digits", "1"), ("digits", "2"), ("mnist", "1"), ("tiny", "1")]
    assert refs[-1].path == store / "tiny.tar.gz"


def test_models_flag_picks_and_names(store: Path) -> None:
    refs = plan(Path("/unused"), store, "b=digits, a=mnist")
    assert [(r.name, r.version) for r in refs] == [("b", "1"), ("b", "2"), ("a", "1")]


def test_versions_sort_numerically(store: Path) -> None:
    shutil.copytree(store / "digits" / "1", store / "digits" / "10")
    assert [r.version for r in plan(Path("/unused"), store, "d=digits")] == ["1", "2", "10"]


def test_without_a_store_the_model_dir_is_model_1(tmp_path: Path) -> None:
    assert plan(tmp_path, None, None) == [ModelRef("model", "1", tmp_path)]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("x=../outside", "is outside the model store"),
        ("x=/etc", "is outside the model store"),
        ("x=link", "is outside the model store"),
        ("x=missing", "does not exist"),
        ("x=README.md", "does not exist"),
        ("x=.cache", "holds no artifact"),
        ("digits", "is not name=path"),
        ("a/b=digits", "model name 'a/b' must be"),
        ("a=digits,a=mnist", "given twice"),
    ],
)
def test_bad_layouts_are_refused_with_the_fix(store: Path, models: str, message: str) -> None:
    (store / "link").symlink_to(store.parent)  # a symlink that leaves the store
    (store.parent / "outside").mkdir()
    with pytest.raises(LayoutError, match=message.replace("(", r"\(").replace(".", r"\.")):
        plan(Path("/unused"), store, models)


def test_models_needs_a_store_and_an_empty_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="--models needs --model-store"):
        plan(tmp_path, None, "a=b")
    with pytest.raises(LayoutError, match="holds no artifacts"):
        plan(tmp_path, tmp_path, None)


def test_routing_by_name_and_version(tiny_artifact_template: Path) -> None:
    artifact = load_artifact(tiny_artifact_template)
    other = load_artifact(tiny_artifact_template)
    models = [("digits", "1", artifact), ("digits", "2", other), ("mnist", "1", artifact)]
    with app_client(models) as (client, state):
        assert state.defaults == {"digits": "2", "mnist": "1"}
        assert state.find(None).label == "digits:2", "the first name is the default model, at its newest version"
        for path in ("/invocations", "/predictions/digits", "/predictions/digits/1", "/predictions/mnist/1"):
            response = client.post(path, json=[IMAGE])
            assert response.status_code == 200, (path, response.text)
        for path, message in [
            ("/predictions/nope", "no model named 'nope' is loaded (loaded: digits, mnist)"),
            ("/predictions/digits/7", "model 'digits' has no version '7' (loaded: 1, 2)"),
        ]:
            response = client.post(path, json=[IMAGE])
            assert response.status_code == 404
            assert response.json()["code"] == "model_not_found"
            assert response.json()["message"] == message
        document = client.get("/openapi.json").json()
        assert document["paths"]["/predictions/{model_name}"]["post"]["parameters"][0]["schema"]["examples"] == [
            "digits",
            "mnist",
        ]
        metrics = client.get("/metrics").text
        for label in ("digits:1", "digits:2", "mnist:1"):
            assert f'deepcloud_queue_depth{{model="{label}"}} 0.0' in metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--models", "a=b"), "error: --models needs --model-store: paths in --models are relative to the model store"),
        (("--max-batch-size", "0"), "error: --max-batch-size must be at least 1, got 0"),
        (("--max-batch-size", "many"), "error: --max-batch-size 'many' is not a whole number"),
        (
            ("--max-batch-delay-ms", "5,ghost=1"),
            "error: --max-batch-delay-ms names ghost, which is not a loaded model (loaded: model)",
        ),
        (
            ("--max-batch-size", "a=1"),
            "error: --max-batch-size 'a=1' has no default value: start it with a number, e.g. 16,digits=1",
        ),
        (("--timeout-s", "-1"), "error: --timeout-s must be at least 0.001, got -1"),
        (("--max-connections", "0"), "error: --max-connections must be at least 1, got 0"),
        (("--max-header-bytes", "1k"), "error: --max-header-bytes '1k' is not a whole number"),
        (
            ("--max-request-line-bytes", "65536"),
            "error: --max-request-line-bytes 65536 is larger than "
            "--max-header-bytes 32768, which includes the request line",
        ),
        (("--header-timeout-s", "0"), "error: --header-timeout-s must be at least 0.001, got 0"),
        (("--max-pending-body-bytes", "1000"), "error: --max-pending-body-bytes must be at least 6291456, got 1000"),
        (("--max-image-pixels", "-5"), "error: --max-image-pixels must be at least 1, got -5"),
    ],
)
def test_bad_settings_exit_with_one_line(tiny_artifact: Path, args: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "serve",
            "--port",
            str(free_port()),
            "--model-dir",
            str(tiny_artifact),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == message


@pytest.mark.parametrize("link", ["a version folder", "a file of the artifact", "a folder inside an artifact"])
def test_links_out_of_the_store_anywhere_inside_a_model_are_refused(store: Path, tmp_path: Path, link: str) -> None:
    """The review registered a symlinked version folder (digits/3 -> outside): nothing outside is ever read."""
    outside = tmp_path / "outside"
    shutil.copytree(store / "mnist", outside)
    if link == "a version folder":
        (store / "digits" / "3").symlink_to(outside)
    elif link == "a file of the artifact":
        (store / "digits" / "2" / "model.pt2").unlink()
        (store / "digits" / "2" / "model.pt2").symlink_to(outside / "model.pt2")
    else:
        (store / "digits" / "2" / "code").symlink_to(outside)
    for models in (None, "d=digits"):
        with pytest.raises(LayoutError, match=r"links outside the model store"):
            plan(Path("/unused"), store, models)


def test_a_link_that_stays_inside_the_store_is_fine(store: Path) -> None:
    (store / "digits" / "3").symlink_to(store / "mnist")
    assert [r.version for r in plan(Path("/unused"), store, "d=digits")] == ["1", "2", "3"]


def test_a_link_to_a_folder_inside_the_store_that_links_out_again_is_refused(store: Path, tmp_path: Path) -> None:
    """The review's chain: digits/3 -> ../.hidden (inside the store), .hidden/model.pt2 -> a file outside."""
    outside = tmp_path / "outside"
    shutil.copytree(store / "mnist", outside)
    hidden = store / ".hidden"
    shutil.copytree(store / "mnist", hidden)
    (hidden / "model.pt2").unlink()
    (hidden / "model.pt2").symlink_to(outside / "model.pt2")
    (store / "digits" / "3").symlink_to(Path("..") / ".hidden")
    (store / "loop").mkdir()
    (store / "loop" / "self").symlink_to(Path(".."))  # a cycle inside the store ends, and is not an escape
    for models in (None, "d=digits"):
        with pytest.raises(LayoutError, match=r"links outside the model store"):
            plan(Path("/unused"), store, models)
