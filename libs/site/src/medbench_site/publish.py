"""Writes a rendered site into a folder so that a web server never serves half of two builds.

    OUT/site -> OUT/.builds/<stamp>   (a symlink, replaced atomically by each build)

Serve OUT/site with any static web server (the chart's site pod, nginx, or `medbench-site
serve`). Older builds are removed once the link no longer points at them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

LINK = "site"
BUILDS = ".builds"
KEEP = 2


def write_site(out: Path, files: Mapping[str, bytes]) -> Path:
    """Writes ``files`` as a new build and points ``out/site`` at it; returns the link."""
    builds = out / BUILDS
    builds.mkdir(parents=True, exist_ok=True)
    build = builds / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns() % 10**9:09d}"
    for path, data in files.items():
        target = (build / path).resolve()
        if build.resolve() not in target.parents:
            raise ValueError(f"page path {path!r} leaves the build folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    link = out / LINK
    staged = out / f".{LINK}.{os.getpid()}"
    staged.unlink(missing_ok=True)
    staged.symlink_to(Path(BUILDS) / build.name)
    os.replace(staged, link)
    current = link.resolve()
    for old in sorted(builds.iterdir())[:-KEEP]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)
    return link
