"""Recording stand-ins for the `pulumi` and `docker` CLIs, which cannot run here (no Pulumi, no AWS registry),
and for the `pip download` that fills an AWS image's wheelhouse (its CUDA torch would be GBs from
download.pytorch.org, which cannot be reached here).

`install` writes three small Python scripts into a bin folder that the tests put first on PATH (the pip one is
what ops.container.build.PIP runs, set by the `standins` fixture). All log their argv to calls.jsonl and answer
from one JSON state file that the test controls:

    {"stack": "t1a2b", "outputs": {...}, "config": {"aws:region": "us-east-1"}, "remaining": [ARNs in the state],
     "fail": {"up": "error: ...", "destroy": "...", "docker_info": "...", "docker_build": "...", "pip_download": "..."},
     "hooks": {"up": "<python>", "destroy": "<python>"}}

`--policy-pack PATH` must name a folder with PulumiPolicy.yaml and __main__.py, or the stand-in fails as the CLI
does. A hook is Python the stand-in runs with `state` (the dict; changes are saved) and boto3 (pointed at
moto_server by AWS_ENDPOINT_URL): `pulumi up` creates the endpoint there, `pulumi destroy` deletes what the
stack made. `docker push` registers the image in moto's ECR, so ops finds it there as it would in AWS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_COMMON = r"""
import json, os, sys
STATE = os.environ["STANDIN_STATE"]
def load():
    with open(STATE) as fh:
        return json.load(fh)
def save(state):
    with open(STATE, "w") as fh:
        json.dump(state, fh, indent=2)
def record(tool, argv):
    with open(os.path.join(os.path.dirname(STATE), "calls.jsonl"), "a") as fh:
        fh.write(json.dumps({"tool": tool, "argv": argv}) + "\n")
def hook(state, name):
    code = state.get("hooks", {}).get(name)
    if code:
        import boto3
        exec(code, {"state": state, "boto3": boto3, "json": json})
"""

PULUMI = (
    _COMMON
    + r"""
argv = sys.argv[1:]
record("pulumi", argv)
state = load()
args = [a for a in argv if a not in ("--non-interactive", "--yes", "--skip-preview", "--exclude-protected", "--json")]
if "--policy-pack" in args:
    i = args.index("--policy-pack")
    pack = args[i + 1]
    del args[i:i + 2]
    # what the real CLI needs to load a Python policy pack: its PulumiPolicy.yaml and __main__.py
    if not all(os.path.isfile(os.path.join(pack, name)) for name in ("PulumiPolicy.yaml", "__main__.py")):
        print(f"error: could not load policy pack {pack}", file=sys.stderr)
        sys.exit(255)
if "--stack" in args:
    i = args.index("--stack")
    wanted = args[i + 1]
    del args[i:i + 2]
    if wanted != state.get("stack"):
        print(f"error: no stack named '{wanted}' found", file=sys.stderr)
        sys.exit(255)
if args == ["version"]:
    print("v3.140.0")
    sys.exit(0)
if not state.get("stack"):
    print("error: no stack selected; please use `pulumi stack select` to choose one", file=sys.stderr)
    sys.exit(255)
if args == ["stack", "--show-name"]:
    print(state["stack"])
elif args == ["stack", "output"]:
    print(json.dumps(state.get("outputs", {})))
elif args == ["stack", "export"]:
    resources = [{"urn": f"urn:pulumi:{state['stack']}::deepcloud::r{i}", "outputs": {"arn": arn}}
                 for i, arn in enumerate(state.get("remaining", []))]
    print(json.dumps({"version": 3, "deployment": {"resources": resources}}))
elif args == ["config"]:
    print(json.dumps({k: {"value": v, "secret": False} for k, v in state.get("config", {}).items()}))
elif args[:2] == ["config", "set"]:
    state.setdefault("config", {})[args[2]] = args[3]
    save(state)
elif args[:2] == ["config", "rm"]:
    state.get("config", {}).pop(args[2], None)
    save(state)
elif args[0] in ("up", "destroy"):
    verb = "Updating" if args[0] == "up" else "Destroying"
    print(f"{verb} ({state['stack']})")
    if state.get("fail", {}).get(args[0]):
        print(state["fail"][args[0]])
        sys.exit(255)
    hook(state, args[0])
    save(state)
    print("Resources:")
    print("    4 changed" if args[0] == "up" else "    12 deleted")
else:
    print(f"error: the stand-in does not know `pulumi {' '.join(argv)}`", file=sys.stderr)
    sys.exit(2)
"""
)

DOCKER = (
    _COMMON
    + r"""
argv = sys.argv[1:]
record("docker", argv)
state = load()
fail = state.get("fail", {})
if argv[:1] == ["info"]:
    if fail.get("docker_info"):
        print(fail["docker_info"], file=sys.stderr)
        sys.exit(1)
    print("27.3.1")
elif argv[:1] == ["login"]:
    sys.stdin.read()
    print("Login Succeeded")
elif argv[:1] == ["build"]:
    print("#1 [internal] load build definition from Dockerfile")
    if fail.get("docker_build"):
        print(fail["docker_build"])
        sys.exit(1)
    print("#12 naming to " + argv[argv.index("-t") + 1] + " done")
elif argv[:1] == ["push"]:
    import hashlib
    import boto3
    repo_url, tag = argv[1].rsplit(":", 1)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": "sha256:" + hashlib.sha256(argv[1].encode()).hexdigest(),
                                      "mediaType": "application/vnd.docker.container.image.v1+json", "size": 1},
                           "layers": []})
    boto3.session.Session().client("ecr").put_image(repositoryName=repo_url.split("/", 1)[1], imageTag=tag,
                                                     imageManifest=manifest)
    print(f"{tag}: digest: sha256:{hashlib.sha256(manifest.encode()).hexdigest()} size: {len(manifest)}")
else:
    print(f"the stand-in does not know `docker {' '.join(argv)}`", file=sys.stderr)
    sys.exit(2)
"""
)


PIP = (
    _COMMON
    + r"""
argv = sys.argv[1:]
record("pip", argv)
state = load()
if argv[:1] != ["download"]:
    print(f"the stand-in does not know `pip {' '.join(argv)}`", file=sys.stderr)
    sys.exit(2)
if state.get("fail", {}).get("pip_download"):
    print(state["fail"]["pip_download"], file=sys.stderr)
    sys.exit(1)
dest = argv[argv.index("--dest") + 1]
if "--no-deps" in argv:  # torch alone, named as PyTorch's index names its builds
    index = argv[argv.index("--index-url") + 1].rstrip("/").rsplit("/", 1)[-1] if "--index-url" in argv else "cpu"
    name = f"torch-2.13.0+{index}-cp311-cp311-manylinux_2_28_x86_64.whl"
else:
    name = "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
with open(os.path.join(dest, name), "wb") as fh:
    fh.write(b"not a wheel")
print(f"Saved {dest}/{name}")
"""
)


def install(bin_dir: Path, state_path: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("pulumi", PULUMI), ("docker", DOCKER), ("pip", PIP)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(0o755)


class StandIns:
    """The state file and the calls log of one test's stand-ins."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.bin = folder / "bin"
        self.state_path = folder / "state.json"
        install(self.bin, self.state_path)
        self.write({"stack": None, "outputs": {}, "config": {}, "fail": {}, "hooks": {}})

    def read(self) -> dict:
        return json.loads(self.state_path.read_text())

    def write(self, state: dict) -> None:
        self.state_path.write_text(json.dumps(state, indent=2))

    def update(self, **changes: object) -> dict:
        state = self.read()
        state.update(changes)
        self.write(state)
        return state

    def calls(self, tool: str | None = None) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        if not log.exists():
            return []
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        return [e["argv"] for e in entries if tool is None or e["tool"] == tool]

    def remove(self, tool: str) -> None:
        (self.bin / tool).unlink()
