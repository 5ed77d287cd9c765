"""The transport under the queues, from the kernel's own counters: struct tcp_info of
every TCP connection of the target's NVMe port (the NVMe/TCP queues, the subflows of the
MPTCP ones) on both sides, sampled every INTERVAL_S while I/O runs (TransportSampler),
and summarised per link for each direction from its sender's side (by_direction): NVMe
writes from the host's connections, reads from the target's. Bytes acknowledged,
retransmissions, losses, and the median congestion window, smoothed RTT and delivery
rate of the connections that sent data: what says why one transport carries more than
another over the same links, not only that it does."""

import statistics
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace

from mptcp_nvme.guest.net import sock_diag

INTERVAL_S = 0.1


@dataclass(frozen=True)
class LinkTransport:
    """One link's connections on one side over a sampled interval."""

    link: str
    connections: int
    bytes_acked: int              # sent from this side and acknowledged
    bytes_received: int           # received on this side
    retransmits: int              # segments retransmitted (tcpi_total_retrans)
    lost_max: int                 # the most segments marked lost at one sample
    cwnd_median: float | None     # segments, of the connections that moved data
    srtt_median_ms: float | None
    delivery_mbit_median: float | None

    def to_dict(self):
        return asdict(self)

    def describe(self):
        def number(value, unit):
            return "-" if value is None else f"{value:.1f}{unit}"
        return (f"{self.link}: {self.connections} conn, acked {self.bytes_acked / 2**20:.1f} MiB, "
                f"received {self.bytes_received / 2**20:.1f} MiB, retrans {self.retransmits}, "
                f"cwnd {number(self.cwnd_median, '')}, srtt {number(self.srtt_median_ms, ' ms')}, "
                f"delivery {number(self.delivery_mbit_median, ' Mbit/s')}")


def _key(record):
    return record.local, record.lport, record.remote, record.rport


def _median(values):
    return statistics.median(values) if values else None


def per_link(samples, links, side="host"):
    """{link name: LinkTransport} from ``samples`` ([(time, [SocketRecord])], the same
    connections of ``side`` seen over time): each connection's counters from its first
    sample to its last, on the link whose address on that side it has (connections from
    elsewhere are not the links'); medians over the samples in which it moved data."""
    link_of = {str((link.host_addr if side == "host" else link.target_addr).ip): link.name
               for link in links}
    first, last, moving = {}, {}, defaultdict(list)
    for _, records in samples:
        for record in records:
            info = record.tcp_info
            if info is None or record.local not in link_of:
                continue
            key = _key(record)
            before = last.get(key)
            first.setdefault(key, info)
            last[key] = info
            if before and (info["bytes_acked"] > before["bytes_acked"]
                           or info["bytes_received"] > before["bytes_received"]):
                moving[link_of[record.local]].append(info)
    found = {}
    for link in links:
        keys = [key for key in last if link_of[key[0]] == link.name]
        infos = moving[link.name]

        def delta(field):
            return sum(last[key][field] - first[key][field] for key in keys)
        found[link.name] = LinkTransport(
            link=link.name, connections=len(keys), bytes_acked=delta("bytes_acked"),
            bytes_received=delta("bytes_received"), retransmits=delta("total_retrans"),
            lost_max=max((info["lost"] for info in infos), default=0),
            cwnd_median=_median([info["snd_cwnd"] for info in infos]),
            srtt_median_ms=_median([info["rtt"] / 1000 for info in infos]),
            delivery_mbit_median=_median([info["delivery_rate"] * 8 / 1e6 for info in infos]))
    return found


def by_direction(host_samples, target_samples, links):
    """{"write": per link from the host's side, "read": per link from the target's}, each
    direction seen by the side that sends its data."""
    return {"write": per_link(host_samples, links, "host"),
            "read": per_link(target_samples, links, "target")}


def socket_links(topology):
    """The links sockets can be told apart by (their addresses): the topology's, or for
    a bond its one address, as one link named "bond" (which slave carried a flow is the
    slaves' byte counters' to say, not a socket's)."""
    if topology.bond:
        return (replace(topology.links[0], name="bond"),)
    return topology.links


class TransportSampler:
    """tcp_info of the TCP connections of the target's port ``port`` in both namespaces
    of ``network`` (the host's to it, the target's from it), every ``interval`` seconds
    for the block, from a thread per side (each in its netns). ``busy_s``: the time the
    sampling itself took, to weigh its cost against the I/O it watched; ``error``: what
    stopped a side's sampling early, if anything."""

    def __init__(self, network, port, interval=INTERVAL_S):
        self.network, self.port, self.interval = network, int(port), interval
        self.samples = {"host": [], "target": []}
        self.busy_s, self.error = 0.0, None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(side,), daemon=True,
                                          name=f"transport-sampler-{side}")
                         for side in self.samples]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return False

    def _mine(self, record, side):
        return record.protocol == "tcp" and (
            record.rport == self.port if side == "host" else record.lport == self.port)

    def _run(self, side):
        netns = self.network.host if side == "host" else self.network.target
        try:
            with netns.enter():
                while True:
                    started = time.monotonic()
                    records = [r for r in sock_diag.sockets() if self._mine(r, side)]
                    self.samples[side].append((started, records))
                    self.busy_s += time.monotonic() - started
                    if self._stop.wait(self.interval):
                        return
        except Exception as err:        # reported by whoever reads the samples
            self.error = err

    def by_direction(self, topology):
        return by_direction(self.samples["host"], self.samples["target"],
                            socket_links(topology))
