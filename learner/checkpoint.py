"""Atomic, verifiable checkpoints of the whole learner state.

A checkpoint is one `.npz` file `checkpoints/ckpt-<step>.npz` in the run
folder holding every leaf of the `TrainingState` (parameters, optimiser and
meta state, counters) plus a JSON header: format version, step, counters and
the run config. It is written to a temporary file, fsynced and renamed, so a
reader never sees half a file; zip CRCs catch corruption on load. Restoring
needs a template state (from `learner.init`) whose leaf shapes must match;
a config that changes them is refused with a message naming the differences.

numpy + json only: no TensorFlow, Reverb or JAX import here.
"""

from __future__ import annotations

import glob
import json
import os
import re
import zipfile
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from utils.files import write_atomic

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d+)\.npz$")
# Config sections that must match for parameters to be reusable.
COMPATIBLE_SECTIONS = ("env", "network", "agent", "meta")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the current run."""


class Checkpoint(NamedTuple):
    path: str
    step: int
    leaves: List[np.ndarray]
    counters: Dict[str, float]
    config: Dict[str, Any]


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def list_checkpoints(directory: str) -> List[Tuple[int, str]]:
    """(step, path) of complete checkpoint files, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "ckpt-*.npz")):
        m = _NAME.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def save(
    directory: str,
    step: int,
    leaves: List[np.ndarray],
    counters: Dict[str, float],
    config: Dict[str, Any],
    keep: int = 3,
) -> str:
    """Write `ckpt-<step>.npz` atomically; keep the newest `keep` files."""
    os.makedirs(directory, exist_ok=True)
    header = {
        "format": FORMAT_VERSION,
        "step": int(step),
        "num_leaves": len(leaves),
        "counters": {k: float(v) for k, v in counters.items()},
        "config": config,
    }
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    final = os.path.join(directory, f"ckpt-{int(step):010d}.npz")
    write_atomic(final, lambda f: np.savez(f, **arrays), binary=True)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for _, old in list_checkpoints(directory)[:-keep]:
        os.unlink(old)
    return final


def load(path: str) -> Checkpoint:
    """Read and verify one checkpoint file; CheckpointError names the file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            leaves = [data[f"leaf_{i:05d}"] for i in range(header["num_leaves"])]
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        KeyError,
        ValueError,
        OSError,
        EOFError,
        json.JSONDecodeError,
        UnicodeDecodeError,
    ) as e:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or truncated ({type(e).__name__}: {e})"
        ) from None
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has format {header.get('format')!r}; "
            f"this code reads format {FORMAT_VERSION}"
        )
    return Checkpoint(path, int(header["step"]), leaves, header["counters"], header["config"])


def read_header(path: str) -> Dict[str, Any]:
    """The JSON header of one checkpoint file (step, counters, config) without
    its arrays; CheckpointError when it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(bytes(data["header"]).decode())
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path!r} has no readable header ({e})") from None


def latest(directory: str, log=print) -> Optional[Checkpoint]:
    """The newest checkpoint that loads; corrupt newer ones are reported and skipped."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return load(path)
        except CheckpointError as e:
            log(f"warning: {e}; falling back to the previous checkpoint")
    return None


def resolve(resume: str) -> Checkpoint:
    """`resume` is a checkpoint file or a run folder / checkpoints folder."""
    if os.path.isfile(resume):
        return load(resume)
    for d in (checkpoint_dir(resume), resume):
        if os.path.isdir(d) and list_checkpoints(d):
            ckpt = latest(d)
            if ckpt is None:
                raise CheckpointError(f"no readable checkpoint in {d!r}: every file is corrupt")
            return ckpt
    raise CheckpointError(
        f"resume path {resume!r} is not allowed: it must be a checkpoint file "
        f"or a run folder containing checkpoints/ckpt-*.npz, and it has none"
    )


def for_run(
    run_dir: str, config: Dict[str, Any], resume: Optional[str] = None, log=print
) -> Optional[Checkpoint]:
    """The checkpoint a run continues from: `resume` (file or folder) if given,
    else the newest readable one in the run folder; refused if its config
    does not fit `config`. None for a fresh run."""
    ckpt = resolve(resume) if resume else latest(checkpoint_dir(run_dir), log=log)
    if ckpt is not None:
        check_compatible(ckpt, config)
    return ckpt


def check_compatible(ckpt: Checkpoint, config: Dict[str, Any]) -> None:
    """Refuse a checkpoint whose env/network/agent/meta config differs."""
    diffs = []
    for section in COMPATIBLE_SECTIONS:
        old, new = ckpt.config.get(section, {}), config.get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(
                    f"{section}.{key}: checkpoint {old.get(key)!r} vs now {new.get(key)!r}"
                )
    if diffs:
        raise CheckpointError(
            f"checkpoint {ckpt.path!r} does not fit the current config: "
            + "; ".join(diffs)
            + ". Start a new run (another --name) or resume with the checkpoint's settings."
        )


def restore_leaves(ckpt: Checkpoint, template_leaves: List[Any]) -> List[np.ndarray]:
    """Check leaf count, shapes and dtypes against a template; return the leaves."""
    if len(ckpt.leaves) != len(template_leaves):
        raise CheckpointError(
            f"checkpoint {ckpt.path!r} has {len(ckpt.leaves)} arrays, the "
            f"current learner state has {len(template_leaves)}"
        )
    for i, (a, t) in enumerate(zip(ckpt.leaves, template_leaves)):
        t_shape, t_dtype = tuple(np.shape(t)), np.dtype(getattr(t, "dtype", np.asarray(t).dtype))
        if a.shape != t_shape or a.dtype != t_dtype:
            raise CheckpointError(
                f"checkpoint {ckpt.path!r} array {i} has shape {a.shape} "
                f"{a.dtype}, the current learner expects {t_shape} {t_dtype}"
            )
    return ckpt.leaves
