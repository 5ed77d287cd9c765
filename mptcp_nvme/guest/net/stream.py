"""An MPTCP (or TCP) byte stream across a topology, measured: throughput, subflows, and
the bytes each link carried. Proves multipath at the socket level on kernels that lack
the NVMe mptcp transport.

The target namespace sends, the host namespace receives: the direction of NVMe reads,
the one in which the script's endpoints (signal on the target, subflow on the host)
spread subflows over every link.
"""

import contextlib
import dataclasses
import socket
import threading
import time

from mptcp_nvme.guest.net.netstat import counter_delta, mptcp_counters
from mptcp_nvme.guest.net.sock_diag import sockets
from mptcp_nvme.guest.net.proof import subflow_pairs
from mptcp_nvme.poll import wait_for
from mptcp_nvme.vocabulary import IPPROTO_MPTCP

SOL_MPTCP = 284
MPTCP_INFO = 1
CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class StreamResult:
    protocol: str
    seconds: float
    received: int
    subflows: int            # additional subflows the host's MPTCP socket joined
    moved: object            # topology.LinkBytes during the measured interval
    mpjoin: dict             # MPTcpExt MPJoin* counters of the host namespace
    pairs: tuple = ()        # (host link, target link) of each subflow (proof.subflow_pairs)

    @property
    def mbit_per_s(self):
        return self.received * 8 / self.seconds / 1e6

    @property
    def link_shares(self):
        """{link name: share of the bytes the host received} (the stream's direction)."""
        return self.moved.shares("rx")


def mptcp_subflows(sock):
    """mptcp_info.mptcpi_subflows of an MPTCP socket (its first byte)."""
    return sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)[0]


def _family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def measure(network, seconds=3.0, protocol="mptcp", expect_subflows=0, port=5201, link=None):
    """Stream from the target to the host over ``link`` (default the first) for
    ``seconds`` and measure it.

    The target listens on the wildcard address, as a server with an address per link
    does: the host's joins to the addresses the target announces find it. With
    ``expect_subflows``, wait (bounded) for that many joined subflows before the
    measured interval starts, so the interval measures the multipath steady state.
    """
    proto = IPPROTO_MPTCP if protocol == "mptcp" else socket.IPPROTO_TCP
    links = network.topology.links
    address = (link or links[0]).traddr
    family = _family(address)
    with contextlib.ExitStack() as cleanup:
        with network.target.enter():
            listener = cleanup.enter_context(socket.socket(family, socket.SOCK_STREAM, proto))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        listener.listen(1)
        stop = threading.Event()
        sender = threading.Thread(target=_send_until, args=(listener, stop), daemon=True)
        sender.start()
        cleanup.callback(sender.join, 10)
        cleanup.callback(stop.set)
        with network.host.enter():
            counters_before = mptcp_counters()
            receiver = cleanup.enter_context(socket.socket(family, socket.SOCK_STREAM, proto))
            receiver.settimeout(30)
            receiver.connect((address, port))
        if protocol == "mptcp" and expect_subflows:
            wait_for(lambda: (_drain(receiver), mptcp_subflows(receiver) >= expect_subflows)[1],
                     f"{expect_subflows} MPTCP subflows to join", timeout=20, interval=0)
        before = network.link_counters()
        received, started = 0, time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            received += _drain(receiver)
        moved = network.link_bytes_since(before)
        with network.host.enter():
            joins = {name: delta for name, delta in
                     counter_delta(counters_before, mptcp_counters()).items()
                     if name.startswith("MPJoin")}
        subflows = mptcp_subflows(receiver) if protocol == "mptcp" else 0
        pairs = _subflow_pairs(network, receiver.getsockname()[1]) if protocol == "mptcp" else ()
    return StreamResult(
        protocol=protocol, seconds=elapsed, received=received, subflows=subflows,
        moved=moved, mpjoin=joins, pairs=tuple(pairs))


def _subflow_pairs(network, lport):
    """(host link, target link) of the subflows of the host's MPTCP socket on ``lport``."""
    with network.host.enter():
        found = sockets()
    tokens = {s.token for s in found if s.protocol == "mptcp" and s.lport == lport}
    return subflow_pairs([s for s in found if s.subflow_of in tokens], network.topology.links)


def _drain(sock):
    data = sock.recv(CHUNK)
    if not data:
        raise ConnectionError("the sender closed the stream early")
    return len(data)


def _send_until(listener, stop):
    listener.settimeout(30)
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    payload = bytes(CHUNK)
    with conn:
        conn.settimeout(5)
        while not stop.is_set():
            try:
                conn.sendall(payload)
            except OSError:
                return
