"""The transport under the queues, from the kernel's own counters: struct tcp_info of
every host-side TCP connection to the target's NVMe port (the NVMe/TCP queues, the
subflows of the MPTCP ones), sampled every INTERVAL_S while I/O runs
(TransportSampler) and summarised per link and direction (per_link): bytes each way,
retransmissions, losses, and the median congestion window, smoothed RTT and delivery
rate of the connections that moved data. What says why one transport carries more
than another over the same links, not only that it does."""

import statistics
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

from mptcp_nvme.guest.net import sock_diag

INTERVAL_S = 0.1


@dataclass(frozen=True)
class LinkTransport:
    """One link's connections over a sampled interval."""

    link: str
    connections: int
    bytes_acked: int              # host -> target (NVMe writes), acknowledged
    bytes_received: int           # target -> host (NVMe reads)
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


def per_link(samples, links):
    """{link name: LinkTransport} from ``samples`` ([(time, [SocketRecord])], the same
    connections seen over time): each connection's counters from its first sample to
    its last, on the link whose host address it has (connections from elsewhere are
    not the links'); medians over the samples in which a connection moved data."""
    link_of = {str(link.host_addr.ip): link.name for link in links}
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


class TransportSampler:
    """tcp_info of the host's TCP connections to ``port`` (the target's trsvcid) in
    ``netns``, every ``interval`` seconds for the block, from a thread of its own (in
    that netns). ``samples`` as per_link() takes them; ``busy_s``: the time sampling
    itself took, to weigh its cost against the I/O it watched."""

    def __init__(self, netns, port, interval=INTERVAL_S):
        self.netns, self.port, self.interval = netns, int(port), interval
        self.samples, self.busy_s, self.error = [], 0.0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transport-sampler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        return False

    def _run(self):
        try:
            with self.netns.enter():
                while True:
                    started = time.monotonic()
                    records = [r for r in sock_diag.sockets()
                               if r.protocol == "tcp" and r.rport == self.port]
                    self.samples.append((started, records))
                    self.busy_s += time.monotonic() - started
                    if self._stop.wait(self.interval):
                        return
        except Exception as err:        # reported by whoever reads the samples
            self.error = err

    def per_link(self, links):
        return per_link(self.samples, links)
