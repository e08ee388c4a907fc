"""Files, safely: the one atomic writer, the run-directory lock, the cache directory, safe joins.

Everything lmforge writes that someone may read later (checkpoints, reports, metrics, shards,
tokenizers, exports, plots) goes through `atomic_write` or `atomic_dir`: the bytes go to a private
temporary file beside the target, are flushed to disk (fsync), renamed over the target (a reader
sees the old file or the new one, never half of one), and the directory entry is flushed too. A
symlink planted at the target is replaced, never followed. A full disk or an unwritable place is
one `LmforgeError` that names the path, and leaves nothing half-written behind.

This module imports nothing of lmforge but `errors`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from lmforge.errors import LmforgeError


# --- errors ------------------------------------------------------------------------------------------
def os_error(e: OSError, path: str | Path, doing: str = "write") -> LmforgeError:
    """An OSError as one sentence naming the path and what to do about it."""
    if e.errno == errno.ENOSPC or e.errno == getattr(errno, "EDQUOT", -1):
        fix = "free some space, or write somewhere else"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a place you can write to" if doing == "write" else "check its permissions"
    else:
        fix = "check the path" if doing != "write" else "choose another place to write to"
    return LmforgeError(f"cannot {doing} {path}: {e.strerror or e}; {fix}")


# --- the atomic writer -----------------------------------------------------------------------------------
def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename is durable only once its directory is)."""
    with contextlib.suppress(OSError):  # some filesystems refuse to open or fsync a directory
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o666) -> Iterator[Path]:
    """`with atomic_path(p) as tmp:` write `tmp` (any way you like); on success it is fsynced and
    renamed over `p`, else removed. `p`'s folder is created. `mode` is masked by the umask."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise os_error(e, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)  # replaces a symlink at `path` itself; never writes through it
        fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise os_error(e, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | Path, data: bytes | str, mode: int = 0o666) -> Path:
    """Write `data` (text is UTF-8) to `path` atomically; returns the path."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """JSON through the atomic writer (numpy / torch values as plain numbers and lists)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=_plain)
    return atomic_write(path, text + "\n")


def _plain(x):
    return x.tolist() if hasattr(x, "tolist") else str(x)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """`with atomic_dir(final) as tmp:` fill the folder `tmp`; on success it becomes `final` in one
    rename (another process that got there first wins, and its folder is kept), else it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise os_error(e, path) from None
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer made the same folder first
        fsync_dir(path.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(e, path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log file (metrics.jsonl) without following a symlink planted there."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LmforgeError(f"{path} is a symbolic link, which lmforge does not write through; remove it") from None
        raise os_error(e, path) from None


# --- paths read from files ---------------------------------------------------------------------------------
def safe_join(folder: str | Path, name: str, what: str = "file") -> Path:
    """`folder / name` for a `name` read from a file (an index, a config), refused unless it is a
    regular file inside `folder`: no absolute paths, no `..` out of it, no links leading out, no FIFOs
    or devices (reading one would hang or read forever)."""
    folder = Path(folder)
    if not isinstance(name, str) or not name or "\x00" in name or Path(name).is_absolute():
        raise LmforgeError(f"{folder} names {what} {name!r}, which is not a relative path inside it; fix the file that "
                           "names it")
    path = folder / name
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise LmforgeError(f"{folder} names {what} {name!r}, which lies outside that directory; fix the file that "
                           "names it")
    try:
        st = path.stat()
    except OSError:
        raise LmforgeError(f"{folder} names {what} {name!r}, which does not exist; restore it or fix the file that "
                           "names it") from None
    if not stat.S_ISREG(st.st_mode):
        raise LmforgeError(f"{folder} names {what} {name!r}, which is not a regular file; fix the file that names it")
    return path


# --- the cache directory --------------------------------------------------------------------------------------
def cache_dir(*parts: str) -> Path:
    """Where lmforge keeps what it downloads or derives (corpora, token shards, compiled steps):
    `$LMFORGE_CACHE`, else `$XDG_CACHE_HOME/lmforge`, else `~/.cache/lmforge`; created on demand."""
    root = os.environ.get("LMFORGE_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "lmforge"
    path = base.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error(e, path, "create the cache folder") from None
    return path


# --- the run-directory lock ----------------------------------------------------------------------------------
LOCK_NAME = ".lock"


class RunLock:
    """One writer per run directory: `with RunLock(run_dir, "train"):` holds an exclusive `flock` on
    RUN/.lock (released by the kernel when the process ends, however it ends). A second process is
    refused in one sentence naming the holder's pid and command."""

    def __init__(self, run_dir: str | Path, command: str = "lmforge"):
        self.run_dir, self.command, self.fd = Path(run_dir), command, None

    def __enter__(self) -> "RunLock":
        import fcntl

        path = self.run_dir / LOCK_NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise os_error(e, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise LmforgeError(f"{self.run_dir} is in use by {holder}; wait for it to finish (or stop it), or choose "
                               "another run directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({self.command})\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


# --- safetensors headers ------------------------------------------------------------------------------------
def safetensors_header(path: str | Path) -> dict[str, dict]:
    """The tensor table of a .safetensors file ({name: {"dtype", "shape", "data_offsets"}}), read from its
    header alone (8 bytes of little-endian length, then that much JSON) so that shapes can be checked
    before any tensor is allocated. A file that is not safetensors is one error."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > min(size - 8, 100 * 2**20):
                raise ValueError("header size")
            table = json.loads(f.read(n))
    except OSError as e:
        raise os_error(e, path, "read") from None
    except (ValueError, UnicodeDecodeError):
        raise LmforgeError(f"{path} is truncated, corrupted or not a safetensors file (its header cannot be read); "
                           "restore it from a copy") from None
    if not isinstance(table, dict):
        raise LmforgeError(f"{path} is not a safetensors file (its header is not a table); restore it from a copy")
    table.pop("__metadata__", None)
    for name, info in table.items():
        shape = info.get("shape") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise LmforgeError(f"{path} has a damaged entry for {name!r} in its header; restore it from a copy")
    return table
