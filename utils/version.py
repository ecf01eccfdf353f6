"""Which code is running: the git commit, and a hash of the sources that
holds on a checkout without git too (every host feeding one run must run the
same code; `launch.remote` checks it when an actor host joins)."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The packages whose code runs in a program's processes.
CODE_PACKAGES = ("agents", "actors", "configs", "learner", "replay", "launch", "utils")


def git_commit(root: str = REPO_ROOT) -> str:
    """Short commit of the checkout at `root`; '' if it is not a git checkout.
    STACX_GIT_COMMIT, where set, names it instead: a tree copied to another
    host may carry no git, or a stale one."""
    if os.environ.get("STACX_GIT_COMMIT"):
        return os.environ["STACX_GIT_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=None)
def code_version(root: str = REPO_ROOT) -> str:
    """12 hex digits of SHA-256 over the path and bytes of every .py file of
    `CODE_PACKAGES` under `root` (uncommitted edits count; caches and the
    data files the packages read do not)."""
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        for folder, _, files in sorted(os.walk(os.path.join(root, package))):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, root).encode() + b"\0")
                with open(path, "rb") as f:
                    h.update(f.read() + b"\0")
    return h.hexdigest()[:12]
