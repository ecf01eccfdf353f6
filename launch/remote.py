"""Actors on other hosts: what a learner host serves, and how they join it.

A learner host started with `launch.run --serve=IFACE` runs replay, counter,
learner and evaluator as usual (and its local actors, possibly none) on
three fixed ports, and writes `<run>/endpoints.json`:

    {"format": 1, "run": name, "interface": "eth0", "address": "10.0.0.1",
     "replay": "10.0.0.1:P", "counter": "10.0.0.1:P+1", "learner": "10.0.0.1:P+2",
     "code_version": sha, "commit": short sha, "config": the run's config}

An actor host runs `python -m launch.actors --endpoints=FILE --num_actors=N`:
a `local_mp` program of N actor nodes whose replay, learner and counter
handles are clients of those addresses. It first asks the counter to join
(`Counter.join`): the counter refuses a host whose code version or shared
config (`configs.shared_config`) differs, and hands out actor ids that are
unique over the run's life, so seeds never repeat across hosts.

Nothing here authenticates: whoever reaches the three ports can read and
write the run (docs/operations.md, "More than one machine").
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from typing import Dict, List, Sequence

ENDPOINTS_FILE = "endpoints.json"
FORMAT = 1
# What an actor host reaches, in port order from the base port.
SERVED: Dict[str, str] = {
    "replay": "Reverb (insert and sample trajectories)",
    "counter": "courier Counter (join, counts, scores)",
    "learner": "courier LearnerNode (parameters)",
}

_SIOCGIFADDR = 0x8915


class EndpointsError(Exception):
    """A bad --serve value, or an endpoints file that cannot be used."""


def interface_address(name: str) -> str:
    """The IPv4 address of network interface `name` in this namespace."""
    from launch.network import interfaces

    have = interfaces()
    if name not in have:
        raise EndpointsError(
            f"--serve={name!r} is not allowed: no such network interface here; "
            f"choose one of {', '.join(have)}"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            req = struct.pack("256s", name.encode()[:15])
            return socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)[20:24])
        except OSError:
            raise EndpointsError(
                f"--serve={name!r} is not allowed: the interface has no IPv4 address"
            ) from None


def pick_ports(base: int) -> Dict[str, int]:
    """Ports for `SERVED`: base, base+1, base+2 (checked free), or three free
    ones picked here when base is 0."""
    if base == 0:
        import portpicker

        ports = [portpicker.pick_unused_port() for _ in SERVED]
    elif not 1024 <= base <= 65535 - len(SERVED):
        raise EndpointsError(
            f"--serve_port={base} is not allowed: must be 0 (pick free ports) or in "
            f"[1024, {65535 - len(SERVED)}]"
        )
    else:
        ports = [base + i for i in range(len(SERVED))]
        for port in ports:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("::", port))
                except OSError as e:
                    raise EndpointsError(
                        f"--serve_port={base} is not allowed: port {port} is in use "
                        f"({e.strerror}); choose another base port"
                    ) from None
    return dict(zip(SERVED, ports))


def endpoints(address: str, ports: Dict[str, int], interface: str, cfg) -> dict:
    from utils.version import code_version, git_commit

    return {
        "format": FORMAT,
        "run": cfg.name,
        "interface": interface,
        "address": address,
        **{name: f"{address}:{port}" for name, port in ports.items()},
        "code_version": code_version(),
        "commit": git_commit(),
        "config": cfg.to_dict(),
    }


def write_endpoints(path: str, data: dict) -> None:
    from utils.files import write_json_atomic

    write_json_atomic(path, data)


def read_endpoints(path: str) -> dict:
    """The endpoints file a learner host wrote; EndpointsError naming what is wrong."""
    from utils.files import read_json

    hint = f"; copy <run folder>/{ENDPOINTS_FILE} from the learner host"
    data = read_json(path, f"--endpoints={path!r}", EndpointsError, hint)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EndpointsError(
            f"--endpoints={path!r} is not allowed: not an endpoints file of format "
            f"{FORMAT} (written by `launch.run --serve`)"
        )
    for key in (*SERVED, "code_version", "config"):
        if key not in data:
            raise EndpointsError(f"--endpoints={path!r} is not allowed: it has no {key!r}")
    for key in SERVED:
        host, _, port = str(data[key]).rpartition(":")
        if not host or not port.isdigit():
            raise EndpointsError(
                f"--endpoints={path!r} is not allowed: {key}={data[key]!r} is not host:port"
            )
    return data


def reachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether a TCP connection to 'host:port' opens."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def host_label(learner_address: str) -> str:
    """'<hostname> <ip>': this host's name and the address it reaches the
    learner host from (what the learner's logs name it by)."""
    host, _, port = learner_address.rpartition(":")
    ip = "?"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port)))  # UDP: picks the route, sends nothing
            ip = s.getsockname()[0]
    except OSError:
        pass
    return f"{socket.gethostname()} {ip}"


def exposure(data: dict, allow: Sequence[str]) -> str:
    """What `--serve` exposes, and firewall rules that keep it to `allow`."""
    ports = [int(data[k].rpartition(":")[2]) for k in SERVED]
    iface, addr = data["interface"], data["address"]
    lines = [
        f"serving actors on {iface} ({addr}); no authentication: anyone who reaches "
        f"these ports can read and write the run:",
        *(f"  {data[k]:<22} {k}: {what}" for k, what in SERVED.items()),
        "every node listens on all interfaces ([::], fixed in Reverb and courier); keep "
        "these ports to the actor hosts, e.g.:",
        *(f"  {rule}" for rule in allow_rules(iface, ports, allow)),
    ]
    return "\n".join(lines)


def allow_rules(interface: str, ports: List[int], allow: Sequence[str]) -> List[str]:
    """iptables rules: the served ports open to `allow` on `interface`, every
    other new TCP connection to the program's ports (>= 1024) dropped there."""
    listed = ",".join(str(p) for p in ports)
    hosts = list(allow) or ["<actor host>"]
    for host in allow:
        try:
            ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise EndpointsError(
                f"--serve_allow={host!r} is not allowed: give IPv4/IPv6 addresses or "
                f"networks (e.g. 10.0.0.7 or 10.0.0.0/24)"
            ) from None
    rules = [
        f"iptables -A INPUT -i {interface} -p tcp -s {h} -m multiport --dports {listed} -j ACCEPT"
        for h in hosts
    ]
    rules.append(
        f"iptables -A INPUT -i {interface} -p tcp --dport 1024:65535 "
        f"-m conntrack --ctstate NEW -j DROP"
    )
    return rules


def first_actor_id(counter, label: str, num_actors: int, cfg, timeout_s: float) -> int:
    """Joins the run through its counter; EndpointsError if the learner host
    does not answer within `timeout_s` or refuses this host."""
    import time

    from configs import shared_config
    from utils.version import code_version

    deadline, answer = time.monotonic() + timeout_s, None
    while answer is None:
        try:
            answer = counter.join(label, num_actors, code_version(), shared_config(cfg))
        except Exception as e:  # courier: deadline exceeded, unavailable
            if time.monotonic() > deadline:
                raise EndpointsError(
                    f"the learner host's counter does not answer ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200]})"
                ) from None
            time.sleep(1.0)
    if "error" in answer:
        raise EndpointsError(f"the learner host refused this actor host: {answer['error']}")
    return int(answer["first_actor_id"])
