"""trainer/s3.py and s3:// channels against moto_server on 127.0.0.1: real boto3 over HTTP, no patching."""

from __future__ import annotations

import csv
from pathlib import Path

import boto3
import pytest

from tests.conftest import PYTHON, free_port, make_job, run_on_terminal, run_trainer
from trainer import s3
from trainer.errors import DataError
from trainer.sagemaker_env import SageMakerEnv


def _put(bucket: str, objects: dict[str, bytes]) -> None:
    client = boto3.session.Session().client("s3")
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def _fingerprint(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    """inode and mtime: a file that was downloaded again (temporary name, rename) gets a new inode."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


OBJECTS = {
    "data/train/manifest.csv": b"file,label\n",
    "data/train/images/00000.png": b"a" * 3000,
    "data/train/images/00001.png": b"b" * 17,
    "data/train2/other.bin": b"not under data/train/",
}


def test_parse_s3_uri() -> None:
    assert s3.parse_s3_uri("s3://bucket/some/prefix/") == ("bucket", "some/prefix/")
    assert s3.parse_s3_uri("s3://bucket") == ("bucket", "")
    for bad in ("bucket/prefix", "https://bucket/x", "s3:///prefix", "s3://a/x", "s3://bad bucket/x"):
        with pytest.raises(DataError, match=r"expected s3://bucket/prefix"):
            s3.parse_s3_uri(bad)


def test_download_prefix_mirrors_a_folder_and_resumes(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _put(bucket, OBJECTS)
    dest = tmp_path / "train"
    paths = s3.download_prefix(f"s3://{bucket}/data/train", dest, progress=True)
    assert paths == [dest / "images" / "00000.png", dest / "images" / "00001.png", dest / "manifest.csv"]
    assert all(p.read_bytes() == OBJECTS[f"data/train/{p.relative_to(dest).as_posix()}"] for p in paths)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "images/00000.png",
        "images/00001.png",
        "manifest.csv",
    ], "no other prefix, no temporary file left"
    out = capsys.readouterr().out  # stderr is not a terminal here: plain lines, no bar
    assert "3 objects (3.0 KiB) to fetch, 0 already present" in out
    assert "3/3 objects" in out

    before = _fingerprint(paths)
    assert s3.download_prefix(f"s3://{bucket}/data/train/", dest, progress=True) == paths
    assert _fingerprint(paths) == before, "a second download must transfer nothing"
    assert "0 objects (0 B) to fetch, 3 already present" in capsys.readouterr().out

    partial = dest / "images" / "00000.png"
    partial.write_bytes(b"a" * 1000)  # an interrupted earlier copy
    s3.download_prefix(f"s3://{bucket}/data/train", dest, progress=True)
    assert "1 object (" in capsys.readouterr().out  # one, not "1 objects"
    assert partial.read_bytes() == OBJECTS["data/train/images/00000.png"]
    after = _fingerprint(paths)
    assert after[partial] != before[partial]
    assert all(after[p] == before[p] for p in paths if p != partial), "only the partial file is fetched again"


def test_download_of_a_single_object_and_of_nothing(bucket: str, tmp_path: Path) -> None:
    _put(bucket, {"arrays/part-0.npz": b"npz bytes"})
    assert s3.download_prefix(f"s3://{bucket}/arrays/part-0.npz", tmp_path) == [tmp_path / "part-0.npz"]
    with pytest.raises(DataError, match=rf"no objects under s3://{bucket}/arrays/part: check the URI"):
        s3.download_prefix(f"s3://{bucket}/arrays/part", tmp_path / "x")


def test_size_mismatch_names_the_key_and_leaves_no_file(bucket: str, tmp_path: Path) -> None:
    """The listing and the bytes received disagree (the object changed in between, or a cut transfer)."""
    _put(bucket, {"data/a.bin": b"12345"})
    target = tmp_path / "a.bin"
    todo = [(s3.S3Object("data/a.bin", 9), target)]  # a listing that says 9 bytes
    report = s3._Progress(f"s3://{bucket}/data", tmp_path, todo, todo, enabled=False)
    with pytest.raises(DataError, match=rf"s3://{bucket}/data/a\.bin downloaded as 5 bytes, but the listing says 9"):
        s3._fetch(s3._client(), bucket, todo, report, f"s3://{bucket}/data")
    assert list(tmp_path.iterdir()) == [], "neither the file nor its temporary copy may stay"


def test_keys_that_would_escape_the_destination_are_refused(bucket: str, tmp_path: Path) -> None:
    _put(bucket, {"data/../../evil.txt": b"x"})
    with pytest.raises(DataError, match=r"S3 object 'data/\.\./\.\./evil\.txt' .* has no safe local path"):
        s3.download_prefix(f"s3://{bucket}/data", tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()


def test_missing_bucket_is_one_line(s3_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        s3.download_prefix("s3://no-such-bucket-here/data", tmp_path)
    assert str(info.value) == (
        "cannot list s3://no-such-bucket-here/data: bucket 'no-such-bucket-here' does not "
        "exist: check the bucket name and the account the credentials belong to"
    )
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match=r"^cannot upload to s3://no-such-bucket-here/k: bucket .* does not exist"):
        s3.upload_file(tmp_path / "f", "s3://no-such-bucket-here/k")


def test_no_credentials_and_unreachable_endpoint(
    s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(DataError, match=r"^cannot list s3://bkt/x: the S3 endpoint is unreachable .*AWS_ENDPOINT_URL"):
        s3.download_prefix("s3://bkt/x", tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(DataError, match=r"^cannot list s3://bkt/x: no AWS credentials found: set AWS_ACCESS_KEY_ID"):
        s3.list_subprefixes("s3://bkt/x")


def test_checkpoint_helpers_round_trip(bucket: str, tmp_path: Path) -> None:
    local = tmp_path / "checkpoints"
    for step in (5, 10):
        (local / f"step-{step}").mkdir(parents=True)
        (local / f"step-{step}" / "state.pt").write_bytes(b"state %d" % step)
        (local / f"step-{step}" / "manifest.json").write_text("{}")
    uri = f"s3://{bucket}/jobs/7/checkpoints"
    uploaded = s3.upload_dir(local, uri, last=("step-5/manifest.json", "step-10/manifest.json"))
    assert uploaded[-2:] == [f"{uri}/step-5/manifest.json", f"{uri}/step-10/manifest.json"]
    assert len(uploaded) == 4
    s3.upload_file(local / "step-5" / "state.pt", f"{uri}/step-15/state.pt")
    assert s3.list_subprefixes(uri) == [f"{uri}/step-10/", f"{uri}/step-15/", f"{uri}/step-5/"]
    assert s3.list_subprefixes(f"s3://{bucket}/nothing/here") == []
    pulled = s3.download_dir(f"{uri}/step-10/", tmp_path / "pulled")
    assert sorted(p.name for p in pulled) == ["manifest.json", "state.pt"]
    assert (tmp_path / "pulled" / "state.pt").read_bytes() == b"state 10"
    with pytest.raises(DataError, match=r"names a folder, not an object"):
        s3.upload_file(local / "step-5" / "state.pt", f"{uri}/")


def test_channel_from_an_s3_uri_is_downloaded_into_input_data(bucket: str, tmp_path: Path) -> None:
    _put(bucket, OBJECTS)
    env = SageMakerEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    environ = {"SM_CHANNEL_TRAIN": f"s3://{bucket}/data/train"}
    assert env.has_channel("train", environ)
    path = env.channel("train", environ)
    assert path == tmp_path / "input" / "data" / "train"
    assert (path / "images" / "00001.png").read_bytes() == b"b" * 17


def _upload_channel(bucket: str, channel: Path, prefix: str, keep: int) -> None:
    """The first ``keep`` samples of a demo-format channel, as objects under ``prefix``."""
    with (channel / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:keep]
    manifest = "file,label\n" + "".join(f"{r['file']},{r['label']}\n" for r in rows)
    objects = {
        f"{prefix}/manifest.csv": manifest.encode(),
        f"{prefix}/classes.txt": (channel / "classes.txt").read_bytes(),
    }
    objects.update({f"{prefix}/{r['file']}": (channel / r["file"]).read_bytes() for r in rows})
    _put(bucket, objects)


@pytest.mark.slow
def test_trainer_trains_on_an_s3_channel(bucket: str, s3_env: dict[str, str], tmp_path: Path, dataset: Path) -> None:
    _upload_channel(bucket, dataset / "train", "digits/train", keep=300)
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"}, channels=("validation",))
    result = run_trainer(base, env={**s3_env, "SM_CHANNEL_TRAIN": f"s3://{bucket}/digits/train"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (
        f"s3 download s3://{bucket}/digits/train -> {base / 'input' / 'data' / 'train'}: 302 objects" in result.stdout
    )
    assert "data train=300 validation=180" in result.stdout
    assert (base / "model" / "manifest.json").exists()
    assert len(list((base / "input" / "data" / "train" / "images").iterdir())) == 300


@pytest.mark.slow
def test_trainer_fails_in_one_line_on_a_missing_bucket(s3_env: dict[str, str], tmp_path: Path, dataset: Path) -> None:
    base = make_job(tmp_path / "job", dataset, {"epochs": "1"}, channels=("validation",))
    result = run_trainer(base, env={**s3_env, "SM_CHANNEL_TRAIN": "s3://no-such-bucket-here/train"})
    assert result.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("cannot list s3://no-such-bucket-here/train: bucket 'no-such-bucket-here' does not")
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {failure.strip()}"


def test_progress_bar_on_a_terminal(bucket: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    _put(bucket, {"data/big.bin": b"x" * 300_000})
    script = f"from trainer import s3; s3.download_prefix('s3://{bucket}/data', {str(tmp_path / 'd')!r}, progress=True)"
    code, screen, stdout = run_on_terminal([PYTHON, "-c", script], s3_env, columns=120, timeout=60)
    assert code == 0, screen.decode(errors="replace")
    assert b"\r" in screen, screen[-300:]
    assert b"293k/293k" in screen, screen[-300:]
    assert stdout == "", "no plain lines when stderr is a terminal"
    assert (tmp_path / "d" / "big.bin").stat().st_size == 300_000
