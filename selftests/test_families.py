"""Address families on each transport: discover, one controller per path, every queue's
socket proven, crc32c-verified fio, over IPv6 and over v4-mapped addresses (IPv6
sockets on ::ffff:10.1.<i>.1, the newer mptcp_nvme.sh's first argument), two paths."""

import pytest

from mptcp_nvme.guest import DIAG, FAMILIES, fio, topology

OTHER_FAMILIES = FAMILIES[1:]       # ipv4 is every other test's


def pytest_generate_tests(metafunc):
    if "family" in metafunc.fixturenames:
        chosen = [f for f in metafunc.config.getoption("family") or OTHER_FAMILIES if f in OTHER_FAMILIES]
        metafunc.parametrize("family", chosen)


@pytest.fixture
def topo(paths, family):
    return topology.topology_for_paths(paths, family=family)


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,))
def test_family_discover_connect_fio(family, trtype, paths, target, nvme_host, network,
                                     prove_transport, record_property):
    """{family} over {trtype}: discover, connect every path, queue sockets proven, verified fio"""
    links = network.topology.links
    for link in links:
        records = nvme_host.discover(trtype, link.traddr, target.trsvcid)
        assert any(r.subnqn == target.nqn for r in records), (link.traddr, records)
    with nvme_host.connected(trtype, network.topology.traddrs, target.trsvcid,
                             target.nqn) as connection:
        ctrls = prove_transport(nvme_host, target.nqn)
        addresses = sorted(nvme_host.controller(c).address["traddr"] for c in connection.controllers)
        nvme_host.set_iopolicy(connection.nqn, "round-robin")
        before = network.link_counters()
        job = fio.FioJob(numjobs=2, iodepth=16, size=fio.VERIFY_SIZE).verifying()
        result = fio.run(job, connection.device, network.host.argv())
        moved = network.link_bytes_since(before)
    record_property(DIAG, f"controllers at {', '.join(addresses)}; verified "
                          f"{result.read.io_bytes} bytes; per link {moved.format()}")
    assert addresses == sorted(link.traddr for link in links), addresses
    assert len(ctrls) == paths and {c.transport for c in ctrls} == {trtype}, ctrls
    assert result.read.io_bytes == result.write.io_bytes > 0
    assert min(moved.shares().values()) > 0.05, moved.format()
