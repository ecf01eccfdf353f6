"""Files a reader must never see half-written, and JSON files read with an
error that names the file and what is wrong with it."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO, Type


def write_atomic(path: str, write: Callable[[IO], None], binary: bool = False) -> None:
    """`write(f)` into a temporary file in `path`'s folder, flushed to disk,
    then renamed over `path`: a reader sees the old file or the new one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _holds_no_object(value: Any) -> bool:
    if isinstance(value, dict):
        return False
    return not isinstance(value, (list, tuple)) or all(_holds_no_object(v) for v in value)


def json_text(obj: Any, indent: int = 1, _level: int = 0) -> str:
    """`obj` as JSON with sorted keys and one object member per line, but
    every list that holds no object on one line: a curve of [frames, value]
    pairs takes one line instead of four per point, about half the bytes of
    `json.dumps(obj, indent=1)`. `json.loads` gives back what `json.dumps` would."""
    if not obj or not isinstance(obj, dict) and _holds_no_object(obj):
        return json.dumps(obj)
    pad, end = " " * indent * (_level + 1), " " * indent * _level
    if isinstance(obj, dict):
        # Keys as json.dumps writes them (1 -> "1", True -> "true"), in that order.
        keys = {next(iter(json.loads(json.dumps({k: None})))): v for k, v in obj.items()}
        items = [
            f"{json.dumps(k)}: {json_text(v, indent, _level + 1)}" for k, v in sorted(keys.items())
        ]
        opening, closing = "{", "}"
    else:
        items = [json_text(v, indent, _level + 1) for v in obj]
        opening, closing = "[", "]"
    return opening + "\n" + ",\n".join(pad + i for i in items) + "\n" + end + closing


def write_json_atomic(path: str, obj: Any, indent: int = 1) -> None:
    """`obj` as JSON (`json_text`) to `path`, atomically (`write_atomic`)."""
    text = json_text(obj, indent) + "\n"

    def write(f: IO) -> None:
        f.write(text)

    write_atomic(path, write)


def read_json(path: str, label: str, error: Type[Exception], hint: str = "") -> Any:
    """The JSON in `path`; `error("<label> is not allowed: ...")` if it cannot
    be read or parsed (`label` names the input, e.g. "--endpoints='x.json'")."""
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise error(f"{label} is not allowed: cannot read it ({e.strerror}){hint}") from None
    except ValueError as e:
        raise error(f"{label} is not allowed: not JSON ({e})") from None


def read_json_or(path: str, default: Any) -> Any:
    """The JSON in `path`, or `default` if it is absent, unreadable or not JSON
    (state files a later write completes: a plan, a marker, a summary)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default
