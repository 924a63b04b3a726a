"""Atomic writes: a reader sees the old file or the complete new one, never half.

Everything styleship writes (images, checkpoints, bundles, caches) goes through
these helpers: write beside the target, fsync, then rename over it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from styleship.errors import InputError


def _umask() -> int:
    """The process umask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the directory `path` (and its parents) if missing; refuse one we cannot write.

    Every command that writes goes through here, so `-o build/out/x` works on a fresh
    clone the way people type it; what cannot be created or written is one InputError.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"output directory {path} is a file (or a path through one)") from None
    except NotADirectoryError:
        raise InputError(f"cannot create output directory {path}: a parent is a file") from None
    except OSError as exc:
        raise InputError(f"cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise InputError(f"output directory is not writable: {path}")
    return path


def _check_parent(path: Path) -> None:
    ensure_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    path = Path(path)
    _check_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write to {path.parent}: {exc.strerror}") from None
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path}: {exc.strerror}") from None
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


UNVERIFIABLE_STAGE_AGE_S = 24 * 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _owner() -> str:
    """The tag a staging directory carries: the pid and host of the process that made it."""
    return f"{os.getpid()}@{_host()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_stages(target: str | os.PathLike) -> list[Path]:
    """Remove staging directories of `target` left by killed processes; returns those removed.

    A stage is stale when its tag names a process of this host that no longer
    runs. A pid is only meaningful on its own host, so a stage from another host
    (a shared filesystem) or one without a tag (older styleship versions) is
    taken as stale once it is over a day old, far longer than any export takes, so
    a live export elsewhere is not pulled from under it. A pid reused by an
    unrelated process only delays the cleanup.
    """
    target = Path(target)
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.(?:(\d+)@([A-Za-z0-9-]+)\.)?[a-z0-9_]{{8}}\.tmp"
    )
    removed = []
    for stage in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = pattern.fullmatch(stage.name)
        if not match or not stage.is_dir() or stage.is_symlink():
            continue
        pid, host = match.groups()
        if pid is not None and host == _host():
            stale = not _alive(int(pid))
        else:
            try:
                stale = time.time() - stage.stat().st_mtime > UNVERIFIABLE_STAGE_AGE_S
            except FileNotFoundError:  # removed by someone else meanwhile
                continue
        if stale:
            shutil.rmtree(stage, ignore_errors=True)
            removed.append(stage)
    return removed


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces `target` only if the block succeeds.

    An exception or interrupt inside the block removes the staging directory
    and leaves any existing `target` untouched. A process killed outright (SIGKILL,
    power loss) cannot clean up: its `.NAME.PID@HOST.XXXXXXXX.tmp` directory is removed
    by the next staged write of the same target (see `remove_stale_stages`).
    """
    target = Path(target)
    _check_parent(target)
    remove_stale_stages(target)
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists (pass --force to replace it)")
    stage = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.{_owner()}.", suffix=".tmp", dir=target.parent)
    )
    stage.chmod(0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield stage
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(stage, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
