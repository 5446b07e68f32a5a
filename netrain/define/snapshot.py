"""The code snapshot: copy the user's code into the batch and fingerprint it."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from netrain.errors import BatchError

MAX_SNAPSHOT_BYTES = 200 * 1024 * 1024


def snapshot_code(src: Path, dest: Path, exclude: tuple[str, ...],
                  skip_paths: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Copy ``src`` into ``dest`` (which must not exist yet); return digest, files, bytes."""
    skip = {p.resolve() for p in skip_paths}
    total = 0
    files: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(src):
        rootp = Path(root)
        dirs[:] = sorted(d for d in dirs if not _excluded(d, exclude)
                         and (rootp / d).resolve() not in skip)
        for name in sorted(names):
            if _excluded(name, exclude):
                continue
            p = rootp / name
            if p.is_symlink() and not p.exists():
                continue
            if not p.is_file():
                continue
            total += p.stat().st_size
            if total > MAX_SNAPSHOT_BYTES:
                raise BatchError(f"code_dir {src} holds more than {MAX_SNAPSHOT_BYTES >> 20} MB "
                                 "of files: exclude data with code_exclude in netrain.yaml")
            files.append((str(p.relative_to(src)), p))
    h = hashlib.sha256()
    dest.mkdir(parents=True, exist_ok=True)
    for rel, p in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
        h.update(rel.encode() + b"\0")
        with open(target, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return {"digest": "sha256:" + h.hexdigest(), "files": len(files), "bytes": total}


def digest_dir(root: Path) -> str:
    """The digest of a snapshot as it is now (``snapshot_code``'s, less Python's caches that
    running the code writes), to tell whether a batch's code was edited since generate."""
    files: list[tuple[str, Path]] = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            p = Path(dirpath) / name
            if name.endswith((".pyc", ".pyo")) or not p.is_file():
                continue
            files.append((str(p.relative_to(root)), p))
    h = hashlib.sha256()
    for rel, p in files:  # the order snapshot_code hashes in
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in patterns)
