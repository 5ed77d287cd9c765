"""Kernel TLS seen from outside: /proc/net/tls_stat per namespace and the sockets
``ss --info`` shows with the tls ULP."""

import dataclasses
import re
from pathlib import Path

from mptcp_nvme import proc




# --- kernel TLS counters ------------------------------------------------------------


TLS_STAT = Path("/proc/thread-self/net/tls_stat")   # the calling thread's netns


def tls_stat(netns):
    """/proc/net/tls_stat of ``netns`` (per network namespace) as {counter: value}."""
    with netns.enter():
        text = TLS_STAT.read_text()
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


@dataclasses.dataclass(frozen=True)
class Socket:
    """An established socket as ``ss --info`` shows it."""

    local: str
    peer: str
    ulp: str | None       # upper layer protocol: "tls" once kTLS is set up on it
    bytes_sent: int
    bytes_received: int


def _field(pattern, text):
    match = re.search(pattern, text)
    return match.group(1) if match else None


def parse_ss(text):
    """Sockets of ``ss -Hin`` output: a line per socket, its details indented below it.
    ss leaves a zero byte count out."""
    sockets = []
    for line in text.splitlines():
        if line and not line[0].isspace():
            *_, local, peer = line.split()
            sockets.append((local, peer, []))
        elif sockets:
            sockets[-1][2].append(line)
    parsed = []
    for local, peer, info in sockets:
        details = " ".join(info)
        parsed.append(Socket(local, peer, _field(r"\btcp-ulp-(\w+)", details),
                             int(_field(r"\bbytes_sent:(\d+)", details) or 0),
                             int(_field(r"\bbytes_received:(\d+)", details) or 0)))
    return parsed


def tcp_sockets_to(netns, port):
    """The established TCP sockets of ``netns`` whose peer port is ``port``."""
    return parse_ss(proc.cmd([*netns.argv(), "ss", "-Htin", "state", "established",
                              "dport", "=", f":{port}"], timeout=60).stdout)
