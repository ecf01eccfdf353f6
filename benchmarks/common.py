"""Shared benchmark helpers: machine/version facts and JSON output."""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Dict


def machine_facts() -> Dict[str, Any]:
    import jax
    facts = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        facts["cpu"] = names[0] if names else platform.processor()
    except OSError:
        facts["cpu"] = platform.processor()
    return facts


def write_json(name: str, payload: Dict[str, Any], out_dir: str = None) -> str:
    out_dir = out_dir or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path
