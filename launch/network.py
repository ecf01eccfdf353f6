"""What the program exposes on the network, and how to keep it on this host.

Every node of a `local_mp` program serves gRPC: Reverb (the replay node) and
courier (counter, learner, actors, evaluator). In the pinned dm-reverb 0.7.3
and dm-launchpad 0.5.2 both servers bind the wildcard address `[::]:PORT`
(hard-coded in their C++ servers; neither takes a host argument), and neither
authenticates callers. `KNOWN_LISTENERS` is that documented list; the
end-to-end test fails if any other listener appears.

Single-host mitigation: `--network=isolated` (the default `auto` picks it when
the kernel allows) runs the whole program in its own network namespace, made
with an unprivileged user namespace, whose only interface is loopback. The
wildcard listeners then exist only inside that namespace and nothing outside
the program can reach them. The program needs no other network access (ALE
ROMs ship with ale-py; logs and checkpoints are files).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import shutil
import socket
import struct
import subprocess
from typing import Dict, Iterable, List, NamedTuple

# Node group -> what listens there. One wildcard TCP listener per process.
KNOWN_LISTENERS: Dict[str, str] = {
    "replay": "Reverb gRPC server (insert/sample/mutate trajectories)",
    "counter": "courier gRPC server (Counter: read/set run counters)",
    "learner": "courier gRPC server (LearnerNode: get_params, save_checkpoint, run)",
    "actor": "courier gRPC server (ActorNode: run)",
    "evaluator": "courier gRPC server (EvaluatorNode: run)",
}

MODES = ("auto", "isolated", "host")
NODE_ENV = "STACX_NODE"  # set in each node's environment to its group (launch.program)

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_TCP_LISTEN = "0A"


class Listener(NamedTuple):
    pid: int
    address: str  # e.g. '::', '127.0.0.1'
    port: int

    @property
    def loopback(self) -> bool:
        addr = ipaddress.ip_address(self.address)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return addr.is_loopback


class NetworkIsolationError(OSError):
    pass


def isolate_network() -> None:
    """Moves this process (and every child it starts later) into a new network
    namespace whose only interface, loopback, is up.

    Uses an unprivileged user namespace mapping the current uid/gid to itself,
    so files keep their owner. Must run before any thread is started (the
    kernel refuses CLONE_NEWUSER in a multi-threaded process).
    """
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetworkIsolationError(
            err,
            f"cannot create a private network namespace ({os.strerror(err)}); "
            f"the kernel or container forbids unprivileged user namespaces "
            f"(check /proc/sys/user/max_user_namespaces, or Docker's seccomp "
            f"profile). Use --network=host and see docs/operations.md, 'Network exposure'",
        )
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
        _loopback_up()
    except OSError as e:
        raise NetworkIsolationError(
            e.errno or errno.EPERM, f"network namespace set-up failed: {e}"
        ) from e


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def apply_mode(mode: str) -> str:
    """Applies --network; returns the mode in effect ('isolated' or 'host')."""
    if mode not in MODES:
        raise ValueError(f"--network={mode!r} is not allowed: choose one of {', '.join(MODES)}")
    if mode == "host":
        return "host"
    try:
        isolate_network()
        return "isolated"
    except NetworkIsolationError:
        if mode == "isolated":
            raise
        return "host"


def interfaces(pid: int = 0) -> List[str]:
    """Network interfaces visible to `pid` (0: this process)."""
    path = f"/proc/{pid or 'self'}/net/dev"
    with open(path) as f:
        return [line.split(":")[0].strip() for line in f.readlines()[2:]]


def _decode(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 stores four host-order 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_sockets(pid: int) -> List[Listener]:
    """TCP sockets in LISTEN state owned by process `pid` (reads /proc; Linux)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == _TCP_LISTEN and inode in inodes:
                addr, port = local.rsplit(":", 1)
                found.append(Listener(pid, _decode(addr), int(port, 16)))
    return found


def node_group(pid: int, env_name: str = NODE_ENV) -> str:
    """The node group a program process was started for ('' if none)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(env_name.encode() + b"="):
                    return item.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return ""


def unexpected_listeners(listeners: Iterable[Listener], groups: Dict[int, str]) -> List[str]:
    """Descriptions of listeners that are neither on loopback nor documented in
    `KNOWN_LISTENERS` (one per node process)."""
    bad: List[str] = []
    per_pid: Dict[int, int] = {}
    for s in listeners:
        if s.loopback:
            continue
        group = groups.get(s.pid, "")
        per_pid[s.pid] = per_pid.get(s.pid, 0) + 1
        if group not in KNOWN_LISTENERS:
            bad.append(f"pid {s.pid} (group {group or '?'}) listens on {s.address}:{s.port}")
        elif per_pid[s.pid] > 1:
            bad.append(f"pid {s.pid} ({group}) has a second listener {s.address}:{s.port}")
    return bad


class NamespacePair(NamedTuple):
    """Two network namespaces joined by a veth pair (`veth_namespaces`)."""

    exec_prefix: Dict[str, List[str]]  # name -> ['ip', 'netns', 'exec', NS]
    namespace: Dict[str, str]
    veth: Dict[str, str]
    address: Dict[str, str]


def veth_namespaces(tag: str, names=("L", "A"), subnet: int = 1):
    """Context manager: namespaces `names` (two) with one veth pair between
    them, addresses 10.213.<subnet>.1 and .2/30 that exist only inside them,
    loopback up in each; deleted on exit. Needs root and `ip` (iproute2);
    raises NetworkIsolationError saying which is missing."""
    if os.geteuid() != 0:
        raise NetworkIsolationError(errno.EPERM, "needs root to create network namespaces")
    if shutil.which("ip") is None:
        raise NetworkIsolationError(errno.ENOENT, "no `ip` command (Debian: iproute2)")
    ns = {k: f"stacx-{k.lower()}{tag}" for k in names}
    veth = {k: f"v{k.lower()}{tag}"[:15] for k in names}
    addr = {k: f"10.213.{subnet}.{i + 1}" for i, k in enumerate(names)}

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    def delete():
        for k in names:
            subprocess.run(["ip", "netns", "del", ns[k]], capture_output=True)

    @contextlib.contextmanager
    def pair():
        try:
            for k in names:
                ip("netns", "add", ns[k])
            a, b = names
            ip("link", "add", veth[a], "type", "veth", "peer", "name", veth[b])
            for k in names:
                ip("link", "set", veth[k], "netns", ns[k])
                ip("-n", ns[k], "addr", "add", f"{addr[k]}/30", "dev", veth[k])
                ip("-n", ns[k], "link", "set", veth[k], "up")
                ip("-n", ns[k], "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            delete()
            raise NetworkIsolationError(
                errno.EPERM, f"cannot set up namespaces: {e.stderr.strip()}"
            ) from None
        try:
            yield NamespacePair({k: ["ip", "netns", "exec", ns[k]] for k in names}, ns, veth, addr)
        finally:
            delete()

    return pair()


def namespace_pids(namespace: str) -> List[int]:
    """Pids of every process in network namespace `namespace` (`ip netns pids`)."""
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]
