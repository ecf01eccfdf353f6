"""One process as Linux's /proc shows it: its stat fields, its threads, its
command line and its descendants. Every reader returns an empty value once
the process has gone (or where there is no /proc), because a process can
exit between any two reads."""

from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional

STATE, PARENT, USER_TICKS, SYSTEM_TICKS = 0, 1, 11, 12  # indices into Stat.fields


class Stat(NamedTuple):
    """`/proc/<pid>/stat` split where the kernel's format allows: the name
    sits in parentheses and may itself hold spaces or ')'. `fields` are the
    fields after it, so `fields[STATE]` is the state letter (proc(5) numbers
    them from 3)."""

    name: str
    fields: List[str]


def stat(pid: int, tid: Optional[int] = None) -> Optional[Stat]:
    """The stat line of `pid`, or of its thread `tid`; None once gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    name, rest = text.split("(", 1)[1].rsplit(")", 1)
    return Stat(name, rest.split())


def threads(pid: int) -> List[int]:
    """Thread ids of `pid` ([] once gone)."""
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def thread_states(pid: int) -> Dict[int, str]:
    """{tid: state letter} of every thread of `pid` that can still be read."""
    states = {}
    for tid in threads(pid):
        s = stat(pid, tid)
        if s is not None:
            states[tid] = s.fields[STATE]
    return states


def command(pid: int) -> str:
    """The command line of `pid` joined by spaces ('' once gone, or for a
    zombie, whose memory is already released)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds `pid` has used (0 once gone)."""
    s = stat(pid)
    if s is None:
        return 0.0
    ticks = int(s.fields[USER_TICKS]) + int(s.fields[SYSTEM_TICKS])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> List[int]:
    """All live descendant pids of `pid`, parents before their children."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = stat(int(entry))
            if s is not None:
                children.setdefault(int(s.fields[PARENT]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
