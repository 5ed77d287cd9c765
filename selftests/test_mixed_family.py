"""Mixed address families (topologies/mixed-family.toml: two ipv6 links and one v4map
link, asymmetric rates, delay and loss): exactly the MPTCP subflows the in-kernel path
manager's rules give (topology.py's docstring, topology.expected_subflows()), for a
plain MPTCP stream and for every NVMe queue, and the bytes each link carried under the
link names of the file."""

import pytest

from mptcp_nvme.guest import DIAG, fio, PollTimeout, proof, sock_diag, stream, topology, wait_for

MIXED = topology.TOPOLOGY_DIR / "mixed-family.toml"


@pytest.fixture
def topo():
    return topology.load_topology(MIXED)


def format_pairs(pairs):
    return " ".join(f"{host}>{target}" for host, target in pairs)


@pytest.mark.requires("kconfig:MPTCP", "kconfig:MPTCP_IPV6")
def test_v4map_ipv6_mixed_mptcp_stream_subflows(network, record_property):
    """v4map and ipv6 links mixed: an MPTCP stream over each link has exactly the subflows the path manager's rules give"""
    for link in network.topology.links:
        expected = topology.expected_subflows(network.topology, link)
        try:
            result = stream.measure(network, seconds=2, expect_subflows=len(expected) - 1,
                                    link=link, port=5200 + link.index)
        except PollTimeout as err:
            raise AssertionError(f"over {link.name}: {err}; expected {format_pairs(expected)}") from None
        record_property(DIAG, f"stream over {link.name} ({link.traddr}): subflows "
                              f"{format_pairs(result.pairs)}; bytes per link "
                              f"{result.moved.format('rx', shares=False)}")
        assert list(result.pairs) == expected, (
            f"over {link.name}: subflows {format_pairs(result.pairs)}, the rules give "
            f"{format_pairs(expected)}")


@pytest.mark.matrix(trtype=("tcp", "mptcp"))
def test_v4map_ipv6_mixed_nvme(trtype, network, target, nvme_host, prove_transport,
                               record_property):
    """v4map and ipv6 links mixed over {trtype}: a controller per link, every queue's subflows as the rules give, verified fio over every link"""
    links = network.topology.links
    by_address = {sock_diag.normalize(link.traddr): link for link in links}
    with nvme_host.connected(trtype, network.topology.traddrs, target.trsvcid,
                             target.nqn) as connection:
        ctrls = prove_transport(nvme_host, connection.nqn)
        if trtype == "mptcp":
            def unexpected():
                wrong = []
                for ctrl in proof.prove_queues(network.host, nvme_host, connection.nqn,
                                                  trtype, links):
                    link = by_address[ctrl.traddr]
                    expected = topology.expected_subflows(network.topology, link)
                    wrong += [f"{ctrl.name} ({link.name}) queue :{q.socket.lport}: "
                              f"{format_pairs(proof.subflow_pairs(q.subflows, links))}, "
                              f"the rules give {format_pairs(expected)}"
                              for q in ctrl.queues
                              if proof.subflow_pairs(q.subflows, links) != expected]
                unexpected.last = wrong
                return not wrong
            try:
                wait_for(unexpected, "every queue's subflows as the rules give", timeout=20)
            except PollTimeout:
                raise AssertionError("; ".join(unexpected.last)) from None
        nvme_host.set_iopolicy(connection.nqn, "round-robin")
        before = network.link_counters()
        job = fio.FioJob(numjobs=2, iodepth=16, size=fio.VERIFY_SIZE).verifying()
        result = fio.run(job, connection.device, network.host.argv())
        moved = network.link_bytes_since(before)
    record_property(DIAG, f"{len(ctrls)} controllers; verified {result.read.io_bytes} bytes; "
                          f"bytes per link target->host {moved.format('rx', shares=False)}, "
                          f"host->target {moved.format('tx', shares=False)}")
    assert result.read.io_bytes == result.write.io_bytes > 0
    assert sorted(moved.of()) == sorted(link.name for link in links)
    assert min(moved.shares().values()) > 0.02, moved.format()
