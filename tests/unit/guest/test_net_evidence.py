"""guest/net (sock_diag, proof, netstat): queue sockets matched to controllers, the transport proof, MPTcpExt."""

import socket

import pytest

from mptcp_nvme import topology
from mptcp_nvme.guest.net import netstat
from mptcp_nvme.guest.net import pdu_capture
from mptcp_nvme.guest.net import proof
from mptcp_nvme.guest.net import sock_diag
from mptcp_nvme.guest.net.sock_diag import SocketRecord
from mptcp_nvme.vocabulary import IPPROTO_MPTCP
from tests import DATA

LINKS = topology.topology_for_paths(4).links
TRADDR, PORT = "10.1.1.1", 4420


def mptcp_queue(lport, token, fallback=False, local="10.1.1.2"):
    return SocketRecord("mptcp", local, lport, TRADDR, PORT, token=token, fallback=fallback)


def subflow(token, local, lport, remote=TRADDR):
    return SocketRecord("tcp", local, lport, remote, PORT, subflow_of=token)


def mesh(token, base):
    """A queue's subflows as the script's endpoints make them: one per host address to
    the connected address, and one to each other signalled target address."""
    subs = [subflow(token, f"10.1.{i}.2", base + i) for i in range(1, 5)]
    subs += [subflow(token, f"10.1.{i}.2", base + 10 + i, f"10.1.{i}.1") for i in range(2, 5)]
    return subs


ADDRESS = {"traddr": TRADDR, "trsvcid": str(PORT), "src_addr": "10.1.1.2"}


def test_mptcp_queues_with_subflows_on_every_link_are_proven():
    records = [mptcp_queue(40001, 11), mptcp_queue(40002, 22), *mesh(11, 50000), *mesh(22, 51000)]
    ctrl = proof.controller_sockets("nvme0", ADDRESS, 2, records)
    assert ctrl.transport == "mptcp" and [len(q.subflows) for q in ctrl.queues] == [7, 7]
    assert proof.coverage_problems(ctrl, LINKS, "mptcp") == []
    assert proof.describe(ctrl, LINKS) == (
        "nvme0 -> 10.1.1.1:4420: 2/2 queue sockets, mptcp, subflows per queue 7/7, per link "
        "path1=2 path2=4 path3=4 path4=4")


def test_a_missing_link_a_fallback_and_a_missing_queue_are_named():
    no_link4 = [s for s in mesh(11, 50000) if not s.local.startswith("10.1.4.")]
    records = [mptcp_queue(40001, 11), mptcp_queue(40002, 22, fallback=True), *no_link4]
    ctrl = proof.controller_sockets("nvme0", ADDRESS, 3, records)
    problems = proof.coverage_problems(ctrl, LINKS, "mptcp")
    assert problems == ["nvme0: 2 queue sockets to 10.1.1.1:4420, sysfs queue_count is 3",
                        "nvme0 queue socket :40001 has 5 subflows, none from path4",
                        "nvme0 queue socket :40002 is tcp (MPTCP fallback), not mptcp"]
    assert ctrl.transport == "mixed: mptcp, tcp (MPTCP fallback)"


def test_eight_links_past_the_subflow_limit_need_its_count_not_every_link():
    """The corpus's eight-links topology over mptcp: 14 joins asked, 8 allowed; a queue
    with 9 subflows and none from path8 is what the kernel may do, one with 5 is not."""
    eight = topology.topology_for_paths(8)
    subs = [subflow(11, f"10.1.{i}.2", 50000 + i) for i in range(1, 8)]
    subs += [subflow(11, "10.1.2.2", 50010, "10.1.2.1"), subflow(11, "10.1.3.2", 50011, "10.1.3.1")]
    ctrl = proof.controller_sockets("nvme0", ADDRESS, 1, [mptcp_queue(40001, 11), *subs])
    assert proof.coverage_problems(ctrl, eight.links, "mptcp", eight) == []
    assert proof.coverage_problems(ctrl, eight.links, "mptcp") == [
        "nvme0 queue socket :40001 has 9 subflows, none from path8"]
    few = proof.controller_sockets("nvme0", ADDRESS, 1, [mptcp_queue(40001, 11), *subs[:5]])
    assert proof.coverage_problems(few, eight.links, "mptcp", eight) == [
        "nvme0 queue socket :40001 has 5 subflows; the endpoints ask for 14 joins, the limit "
        "allows 8: 9 subflows"]
    four = topology.topology_for_paths(4)
    no_link4 = [s for s in mesh(11, 50000) if not s.local.startswith("10.1.4.")]
    ctrl4 = proof.controller_sockets("nvme0", ADDRESS, 1, [mptcp_queue(40001, 11), *no_link4])
    assert proof.coverage_problems(ctrl4, four.links, "mptcp", four) == [
        "nvme0 queue socket :40001 has 5 subflows, none from path4"]


def test_an_ipv4_connection_is_not_asked_for_subflows_on_an_ipv6_link():
    v6 = topology.replace(LINKS[3], family="ipv6",
                          target_addr=topology.default_addresses(4, "ipv6")[0],
                          host_addr=topology.default_addresses(4, "ipv6")[1])
    links = (*LINKS[:3], v6)
    no_link4 = [s for s in mesh(11, 50000) if not s.local.startswith("10.1.4.")]
    ctrl = proof.controller_sockets("nvme0", ADDRESS, 1, [mptcp_queue(40001, 11), *no_link4])
    assert proof.coverage_problems(ctrl, links, "mptcp") == []
    assert proof.coverage_problems(ctrl, LINKS, "mptcp") == [
        "nvme0 queue socket :40001 has 5 subflows, none from path4"]
    assert topology.family_joinable(LINKS[0], v6) is False
    assert topology.family_joinable(v6, LINKS[0]) and topology.family_joinable(LINKS[0], LINKS[1])


def test_plain_tcp_queues_and_the_subflows_of_other_connections_are_told_apart():
    records = [SocketRecord("tcp", "10.1.1.2", 40001, TRADDR, PORT),
               SocketRecord("tcp", "10.1.1.2", 40002, TRADDR, PORT),
               SocketRecord("tcp", "10.1.3.2", 40003, TRADDR, PORT),        # other source
               SocketRecord("tcp", "10.1.1.2", 40004, TRADDR, 4421),        # other port
               subflow(99, "10.1.1.2", 40005)]
    ctrl = proof.controller_sockets("nvme1", ADDRESS, 2, records)
    assert [q.socket.lport for q in ctrl.queues] == [40001, 40002]
    assert ctrl.transport == "tcp"
    assert proof.coverage_problems(ctrl, LINKS, "tcp") == []
    assert proof.coverage_problems(ctrl, LINKS, "mptcp") == [
        "nvme1 queue socket :40001 is tcp, not mptcp", "nvme1 queue socket :40002 is tcp, not mptcp"]


def test_controllers_sharing_a_target_port_are_proven_together():
    """Two subsystems on one port: their controllers' sockets are indistinguishable, so
    each is checked against the queue_counts of both (the 2-subsystem backing case)."""
    records = [SocketRecord("tcp", "10.1.1.2", 40000 + i, TRADDR, PORT) for i in range(6)]
    alone = proof.controller_sockets("nvme0", ADDRESS, 3, records)
    assert proof.coverage_problems(alone, LINKS, "tcp") == [
        "nvme0: 6 queue sockets to 10.1.1.1:4420, sysfs queue_count is 3"]
    shared = proof.controller_sockets("nvme0", ADDRESS, 3, records, port_queue_count=6)
    assert proof.coverage_problems(shared, LINKS, "tcp") == []
    assert proof.describe(shared, LINKS) == (
        "nvme0 -> 10.1.1.1:4420: 6/6 queue sockets (with the other controllers to this port), tcp")
    short = proof.controller_sockets("nvme0", ADDRESS, 3, records[:5], port_queue_count=6)
    assert proof.coverage_problems(short, LINKS, "tcp") == [
        "nvme0: 5 queue sockets to 10.1.1.1:4420, the queue_count of the controllers to that "
        "port sums to 6"]
    assert proof.port_key({**ADDRESS, "traddr": "::ffff:10.1.1.1"}) == (TRADDR, PORT, "10.1.1.2")


def test_v4mapped_controller_addresses_match_ipv4_sockets():
    address = {"traddr": "::ffff:10.1.1.1", "trsvcid": str(PORT), "src_addr": "::ffff:10.1.1.2"}
    ctrl = proof.controller_sockets("nvme0", address, 1, [mptcp_queue(40001, 11), *mesh(11, 0)])
    assert len(ctrl.queues) == 1 and ctrl.traddr == TRADDR


def test_mptcp_info_layout():
    raw = bytes([3, 1, 2, 8, 4, 8, 0, 0]) + (1).to_bytes(4, "little") + (0xABCD).to_bytes(4, "little")
    info = sock_diag.parse_mptcp_info(raw + bytes(80))
    assert (info["subflows"], info["subflows_max"], info["flags"], info["token"]) == (3, 8, 1, 0xABCD)


NETSTAT = """TcpExt: SyncookiesSent SyncookiesRecv
TcpExt: 0 0
MPTcpExt: MPCapableSYNRX MPCapableFallbackACK MPJoinSynAckRx DataCsumErr OFOQueue
MPTcpExt: 3 1 12 0 7
"""


def test_netstat_counters_deltas_and_problems():
    counters = netstat.parse_netstat(NETSTAT)
    assert counters == {"MPCapableSYNRX": 3, "MPCapableFallbackACK": 1, "MPJoinSynAckRx": 12,
                        "DataCsumErr": 0, "OFOQueue": 7}
    assert netstat.reported(counters) == {"DataCsumErr": 0, "MPCapableFallbackACK": 1,
                                           "MPCapableSYNRX": 3, "MPJoinSynAckRx": 12}
    assert netstat.counter_problems(counters) == ["MPTcpExt MPCapableFallbackACK +1"]
    assert netstat.counter_problems({"DataCsumErr": 2}) == ["MPTcpExt DataCsumErr +2"]
    # the keep-alive fault's reconnect on a loaded machine: one queue fell back to TCP
    assert netstat.counter_problems({"MPCapableSYNTX": 19, "MPCapableSYNTXDrop": 1}) == [
        "MPTcpExt MPCapableSYNTXDrop +1"]
    assert netstat.counter_delta({"A": 1, "B": 2}, {"A": 1, "B": 5, "C": 1}) == {"B": 3, "C": 1}


@pytest.mark.parametrize("prefix", sorted({p.name.rsplit("-", 1)[0]
                                           for p in DATA.glob("sockdiag-*-mptcp.bin")}))
def test_captured_dumps_parse(prefix):
    """Real sock_diag replies captured in a guest (tests/data/capture_sockdiag.py) with
    NVMe controllers connected: every MPTCP queue socket has its subflows."""
    mptcp = sock_diag.parse_dump((DATA / f"{prefix}-mptcp.bin").read_bytes(), IPPROTO_MPTCP)
    tcp = sock_diag.parse_dump((DATA / f"{prefix}-tcp.bin").read_bytes(), socket.IPPROTO_TCP)
    assert mptcp and all(r.protocol == "mptcp" and r.token for r in mptcp)
    tokens = {r.token for r in mptcp}
    subflows = [r for r in tcp if r.is_subflow]
    assert subflows and {s.subflow_of for s in subflows} <= tokens


@pytest.mark.parametrize("prefix", sorted({p.name.rsplit("-", 1)[0]
                                           for p in DATA.glob("sockdiag-*-tcp.bin")}))
def test_tcp_info_of_captured_subflows(prefix):
    """struct tcp_info's layout read off real replies: every subflow established, the
    veth's MTU and MSS, rtt at least min_rtt, and the pacing rate the kernel derives from
    them (tcp_update_pacing_rate: 2 x cwnd x mss / srtt in slow start) to within 1 %."""
    tcp = sock_diag.parse_dump((DATA / f"{prefix}-tcp.bin").read_bytes(), socket.IPPROTO_TCP)
    infos = [r.tcp_info for r in tcp if r.is_subflow]
    assert infos and all(infos)
    for info in infos:
        assert (info["state"], info["pmtu"], info["snd_mss"]) == (1, 1500, 1448), info
        assert 0 < info["min_rtt"] <= info["rtt"] and info["snd_cwnd"] >= 1, info
        assert info["bytes_received"] >= 0 and info["total_retrans"] == 0, info
        assert info["pacing_rate"] == pytest.approx(
            2 * info["snd_cwnd"] * info["snd_mss"] / (info["rtt"] / 1e6), rel=0.01), info
    assert sock_diag.parse_tcp_info(b"\x01" * 100) is None          # older, shorter struct


def test_garbage_dump_does_not_crash():
    assert sock_diag.parse_dump(b"\x00" * 7, socket.IPPROTO_TCP) == []


def ic_frame(kind, dgst, sport=4420, dport=51234, ipv6=False, hlen=128, plen=128):
    """An Ethernet frame with one NVMe/TCP IC PDU, laid out as the spec has it."""
    pdu = bytes([kind, 0, hlen, 0]) + plen.to_bytes(4, "little") + (0).to_bytes(2, "little")
    pdu += bytes([0, dgst]) + (0x20000).to_bytes(4, "little") + bytes(112)
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(8) + bytes([5 << 4, 0x18])
    tcp += bytes(6)
    if ipv6:
        ip = bytes([0x60, 0, 0, 0]) + (len(tcp) + len(pdu)).to_bytes(2, "big") + bytes([6, 64])
        ip += bytes(32)
        ethertype = b"\x86\xdd"
    else:
        ip = bytes([0x45, 0]) + (20 + len(tcp) + len(pdu)).to_bytes(2, "big") + bytes(4)
        ip += bytes([64, 6]) + bytes(10)           # ttl, protocol TCP; checksum, addresses
        ethertype = b"\x08\x00"
    return bytes(12) + ethertype + ip + tcp + pdu


def test_ic_pdus_are_read_from_ipv4_and_ipv6_frames():
    resp = pdu_capture.parse_ic_pdu(ic_frame(pdu_capture.ICRESP, 3))
    assert resp == pdu_capture.IcPdu(pdu_capture.ICRESP, 4420, 51234, pdu_capture.HDGST | pdu_capture.DDGST)
    req = pdu_capture.parse_ic_pdu(ic_frame(pdu_capture.ICREQ, 0, 51234, 4420, ipv6=True))
    assert req == pdu_capture.IcPdu(pdu_capture.ICREQ, 51234, 4420, 0)


@pytest.mark.parametrize("frame", [ic_frame(0x04, 3), ic_frame(pdu_capture.ICRESP, 3, hlen=24),
                                   ic_frame(pdu_capture.ICRESP, 3, plen=4096), b"\x00" * 13,
                                   ic_frame(pdu_capture.ICRESP, 3)[:60]])
def test_other_frames_are_not_ic_pdus(frame):
    assert pdu_capture.parse_ic_pdu(frame) is None


def test_subflow_pairs_name_the_host_link_and_the_target_link():
    subs = [subflow(11, "10.1.2.2", 50001), subflow(11, "10.1.3.2", 50002, "10.1.3.1"),
            subflow(11, "10.9.9.9", 50003)]
    assert proof.subflow_pairs(subs, LINKS) == [
        ("10.9.9.9", "path1"), ("path2", "path1"), ("path3", "path3")]
