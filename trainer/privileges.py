"""Run the training process as an unprivileged user even where the platform starts it as root.

SageMaker starts training containers as root and mounts /opt/ml owned by root, so an image whose
USER is not root cannot write its model there. ECS gives the task a fresh volume at /opt/ml, empty, root's and
mode 0755 (moby's local volume driver creates it so). The image therefore starts as root with
``DEEPCLOUD_RUN_AS=uid:gid`` set: before any user code or data is touched, the writable parts of the
layout are handed to that user and the process drops to it for good. Those are model/, output/ (with
output/data/), checkpoints/, and the folder of every ``s3://`` channel, input/data/<name>/, which the trainer
downloads into; folders this makes on the way (input/ and input/data/ on ECS) are that user's too. What the
platform provides and the trainer only reads (hyperparameters, local channels) stays as it is.

Root never acts through a symbolic link there: every folder below the base directory is opened (or made)
relative to its parent's descriptor with O_NOFOLLOW, so a link where one of those folders should be stops the
job with a ConfigError before anything is chowned, and the walk inside them (os.fwalk without following links)
chowns a link itself, never what it points to. A job folder that someone could write to before the trainer
starts therefore cannot make root chown, or create, anything outside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from trainer.errors import ConfigError
from trainer.sagemaker_env import SageMakerEnv

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def drop_privileges(env: SageMakerEnv, spec: str | None = None) -> tuple[int, int] | None:
    """Switch to ``uid:gid`` from DEEPCLOUD_RUN_AS when running as root; return the ids, or None."""
    spec = os.environ.get("DEEPCLOUD_RUN_AS", "") if spec is None else spec
    if not spec or os.geteuid() != 0:
        return None
    uid_text, _, gid_text = spec.partition(":")
    if not (uid_text.isdigit() and gid_text.isdigit()) or int(uid_text) == 0:
        raise ConfigError(f"DEEPCLOUD_RUN_AS={spec!r} must be 'uid:gid' of a non-root user, e.g. 10001:10001")
    uid, gid = int(uid_text), int(gid_text)
    roots = [
        env.model_dir,
        env.failure_path.parent,
        env.output_data_dir,
        env.checkpoint_dir,
        *(env.download_dir(name) for name in env.s3_channels()),
    ]
    # Every folder first, then the handover: once a folder is the user's, root may not create anything in it
    # where the platform leaves it no CAP_DAC_OVERRIDE (the ECS task definition keeps only CHOWN, SETUID, SETGID).
    made: list[int] = []
    opened: list[int] = []
    try:
        for root in roots:
            opened.append(_open_folder(env.base_dir, root, made))
        for fd in opened:
            _hand_over(fd, uid, gid)
        for fd in made:
            os.fchown(fd, uid, gid)
    finally:
        for fd in (*opened, *made):
            os.close(fd)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # last: after this nothing can take root back
    os.environ["HOME"] = str(Path("/tmp"))  # noqa: S108 - torch and matplotlib want a writable home for caches
    return uid, gid


def _open_folder(base: Path, folder: Path, made: list[int]) -> int:
    """A descriptor of ``folder``, made where missing (descriptors of what was made go to ``made``).

    The base directory (or, for a folder outside it, the folder's parent) is the platform's and opened as it is;
    each part below it is opened relative to the one above and never through a symbolic link."""
    if folder != base and folder.is_relative_to(base):
        trusted, parts = base, folder.relative_to(base).parts
        base.mkdir(parents=True, exist_ok=True)  # a local job's base (SAGEMAKER_BASE_DIR=/tmp/job) may not exist yet
    else:
        trusted, parts = folder.parent, (folder.name,)
        trusted.mkdir(parents=True, exist_ok=True)
    fd = os.open(trusted, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = trusted
    try:
        for part in parts:
            path = path / part
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            try:
                child = os.open(part, _NOFOLLOW_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):  # Linux says ENOTDIR for a link with O_DIRECTORY
                    raise
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise ConfigError(
                        f"{path} is a symbolic link: the trainer, started as root, follows no link in "
                        "the job's folders; make it a real folder"
                    ) from None
                raise ConfigError(f"{path} is not a folder: the trainer needs to write there") from None
            os.close(fd)
            fd = child
            if created:
                made.append(os.dup(fd))  # closed by the caller
        return fd
    except BaseException:
        os.close(fd)
        raise


def _hand_over(fd: int, uid: int, gid: int) -> None:
    """chown the folder ``fd`` and everything in it; a symbolic link is chowned itself and never followed."""
    os.fchown(fd, uid, gid)
    for _, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        for name in (*dirnames, *filenames):
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)


def write_file(base: Path, file: Path, data: bytes) -> None:
    """Write ``file`` (below ``base``) whole or not at all, never through a symbolic link: output/failure, which the
    trainer may have to write while still root, when the handover itself failed."""
    made: list[int] = []
    fd = _open_folder(base, file.parent, made)
    tmp = f".{file.name}.tmp-{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)  # a leftover of a killed run: PID 1 in every container
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            os.write(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, file.name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        for opened in (fd, *made):
            os.close(opened)
