"""Fingerprinted result cells: a cached result is reused only if it was made from the
same settings, and every result records the code version that made it.

A cell is one JSON file::

    {"fingerprint": {"key": sha256, "settings": {...}},
     "provenance": {"commit": ..., "dirty": ..., "date": ..., "seconds": ...},
     "result": {...}}

``settings`` is everything the result depends on that is not code: model, checkpoint
and spec hashes, thresholds, calibration, split and image range, search parameters.
The code version is recorded, not matched (a new commit does not invalidate every
cell; the reproduction tests check that the code still produces committed cells).
Writes are atomic, so an interrupted run resumes from the last finished cell.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redy_jax.files import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent


def digest(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, floats as repr)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, allow_nan=False,
                                     default=_jsonable).encode()).hexdigest()


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"cannot fingerprint {type(o).__name__}")


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git(*args: str) -> str | None:
    """Standard output of ``git *args`` run in the package's checkout; None outside git
    (or when git is missing or fails)."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def code_version(paths: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout the package runs from (None outside git).
    ``dirty``: tracked files differ from the commit; with ``paths`` (git pathspecs),
    only changes under them count, untracked files included."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    which = ("--untracked-files=all", "--", *paths) if paths else ("--untracked-files=no",)
    status = _git("status", "--porcelain", *which)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


SOURCE_PATTERNS = ("redy_jax/**/*.py", "benchmarks/*.py")
"""The files a benchmark result depends on: the package and the benchmark scripts."""


def source_digest(patterns=SOURCE_PATTERNS, root: Path = ROOT) -> str:
    """SHA-256 over the relative paths and contents of the files under ``root`` that
    match ``patterns`` (sorted; ``__pycache__`` excluded): it changes whenever any of
    that code does, committed or not."""
    files = sorted({f for pat in patterns for f in root.glob(pat)
                    if f.is_file() and "__pycache__" not in f.parts})
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def provenance() -> dict[str, Any]:
    """What made a measured result: the checkout's commit, whether its sources
    (:data:`SOURCE_PATTERNS`, as git glob pathspecs: the same files the digest reads)
    differed from it, and :func:`source_digest` of the code it ran (tests compare that
    with the code now)."""
    sources = tuple(f":(glob){pattern}" for pattern in SOURCE_PATTERNS)
    return {**code_version(sources), "sources": source_digest()}


class Cells:
    """JSON cells under ``root``: :meth:`get` computes a cell only when it is missing or
    was made from other settings."""

    def __init__(self, root, log: Callable[[str], None] | None = print):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log or (lambda s: None)
        self.served: set[str] = set()
        """Names of the cells :meth:`get` returned (cached or computed) in this run."""

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def load(self, name: str) -> dict | None:
        """The whole cell (fingerprint, provenance, result), or None."""
        p = self.path(name)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None

    def get(self, name: str, settings: dict, compute: Callable[[], dict]) -> dict:
        """The result of cell ``name`` for ``settings``: cached if its fingerprint
        matches, else computed (and written atomically)."""
        key = digest(settings)
        self.served.add(name)
        cell = self.load(name)
        if cell is not None and cell.get("fingerprint", {}).get("key") == key:
            return cell["result"]
        if cell is not None:
            self.log(f"  {name}: settings changed, recomputing")
        t0 = time.time()
        result = compute()
        atomic_write_json(self.path(name), {
            "fingerprint": {"key": key, "settings": settings},
            "provenance": {**code_version(), "date": time.strftime("%Y-%m-%d"),
                           "seconds": round(time.time() - t0, 1)},
            "result": result})
        self.log(f"  computed {name} ({time.time() - t0:.0f} s)")
        return result

    def unused(self) -> list[Path]:
        """Cell files under ``root`` that this run did not ask for (made from settings
        no longer in use, e.g. the fronts of a superseded search), sorted."""
        keep = {self.path(n).resolve() for n in self.served}
        return sorted(p for p in self.root.rglob("*.json") if p.resolve() not in keep)


__all__ = ["Cells", "code_version", "digest", "file_sha256"]
