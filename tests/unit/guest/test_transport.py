"""Per-link transport counters from tcp_info samples: the queue subflows of a real
sock_diag reply captured in a guest (2 links, NVMe over MPTCP), moved forward as a
second sample would see them."""

import dataclasses
import socket

import pytest

from mptcp_nvme import topology
from mptcp_nvme.guest.net import sock_diag, transport
from tests import DATA

LINKS = topology.topology_for_paths(2).links


@pytest.fixture
def captured():
    records = sock_diag.parse_dump((DATA / "sockdiag-nvme-mptcp-2path-tcp.bin").read_bytes(),
                                   socket.IPPROTO_TCP)
    return [r for r in records if r.is_subflow]


def later(record, **more):
    """``record`` as a later sample sees it: counters grown by ``more``, others as given."""
    info = dict(record.tcp_info)
    for field, value in more.items():
        info[field] = info[field] + value if field in ("bytes_acked", "bytes_received",
                                                       "total_retrans") else value
    return dataclasses.replace(record, tcp_info=info)


def test_bytes_retransmits_and_medians_per_link(captured):
    on_path1 = [r for r in captured if r.local == "10.1.1.2"]
    on_path2 = [r for r in captured if r.local == "10.1.2.2"]
    busy = on_path1[0]
    second = [later(busy, bytes_received=3 << 20, total_retrans=4, snd_cwnd=40, rtt=2000,
                    lost=2, delivery_rate=2_500_000),
              *on_path1[1:], *(later(r, bytes_acked=1 << 20) for r in on_path2)]
    found = transport.per_link([(0.0, captured), (0.1, second)], LINKS)
    one, two = found["path1"], found["path2"]
    assert (one.connections, two.connections) == (len(on_path1), len(on_path2))
    assert (one.bytes_received, one.bytes_acked, one.retransmits) == (3 << 20, 0, 4)
    assert (one.cwnd_median, one.srtt_median_ms, one.lost_max) == (40, 2.0, 2)
    assert one.delivery_mbit_median == pytest.approx(20.0)
    assert (two.bytes_acked, two.bytes_received, two.retransmits) == (len(on_path2) << 20, 0, 0)
    assert two.cwnd_median == 10                   # the captured connections' own window
    assert "path1: " in one.describe() and "received 3.0 MiB" in one.describe()


def test_idle_links_have_no_medians_and_others_connections_are_not_counted(captured):
    found = transport.per_link([(0.0, captured), (0.1, captured)], LINKS)
    assert all(t.cwnd_median is None and t.bytes_acked == 0 for t in found.values())
    elsewhere = topology.topology_for_paths(3).links[2:]       # 10.1.3.2: no socket there
    assert transport.per_link([(0.0, captured)], elsewhere)["path3"].connections == 0
    assert transport.per_link([], LINKS)["path1"].to_dict()["connections"] == 0


def test_each_direction_is_seen_from_its_sender(captured):
    """The captured host-side subflows stand in for both sides: the target's view maps
    connections by the target's address on each link (10.1.x.1)."""
    as_target = [dataclasses.replace(r, local=r.remote, remote=r.local) for r in captured]
    moved = [later(r, bytes_acked=1 << 20) for r in as_target]
    found = transport.by_direction([(0.0, captured)], [(0.0, as_target), (0.1, moved)], LINKS)
    assert found["write"]["path1"].bytes_acked == 0
    read = sum(t.bytes_acked for t in found["read"].values())
    assert read == len(as_target) << 20


def test_a_bond_s_connections_are_one_link():
    bonded = topology.bonded(topology.topology_for_paths(4), "802.3ad")
    assert [link.name for link in transport.socket_links(bonded)] == ["bond"]
    assert transport.socket_links(bonded)[0].host_addr == bonded.links[0].host_addr
    plain = topology.topology_for_paths(4)
    assert transport.socket_links(plain) == plain.links
