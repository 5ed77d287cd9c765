"""mptcp_nvme.sh's scenario, one test:
``mptcp-nvme script [ipv4|ipv6|v4map] [trtype] [path] [iopolicy] [loss] [tls]``.

Defaults are the script's (ipv4, mptcp, 1 path, numa, no loss, no TLS); the command line
options --family/--trtype/--paths/--iopolicy/--loss/--tls/--host-iface choose others.
As in the script, the topology always has 4 veth pairs with MPTCP endpoints on each, and
``path`` is the number of NVMe connections: with mptcp and 1 path, one controller whose
queues have subflows on all 4 links. Reports like the script:
``ok 1 - mptcp_nvme: nvme over <trtype> test # time=...ms``, with the queue sockets'
evidence, ``nvme list`` and fio's bandwidth as diagnostics.
"""

import socket

import pytest

from mptcp_nvme.guest import DIAG, TLS_NEEDS, fio, quick, require, topology


@pytest.fixture
def family(request):
    return (request.config.getoption("family") or ["ipv4"])[0]


@pytest.fixture
def topo(request, paths, loss, family):
    """The script's 4 links whatever ``paths`` is (it sets the connections), at --rate."""
    return topology.script_topology(paths, loss=loss, family=family,
                                    rate=request.config.getoption("rate"))


@pytest.fixture
def make_target(make_target, network, paths):
    """The script's ports: one per connection, the wildcard address for path 1."""
    def make(**options):
        return make_target(addresses=network.topology.traddrs[:paths], **options)
    return make


def bound_to(network, ifname, ctrls):
    """Queue sockets of ``ctrls`` not bound to ``ifname`` (SO_BINDTODEVICE), as text."""
    with network.host.enter():
        index = socket.if_nametoindex(ifname)
    return [f"{c.name}:{q.socket.lport} bound to ifindex {q.socket.bound_ifindex}"
            for c in ctrls for q in c.queues if q.socket.bound_ifindex != index]


@pytest.mark.matrix(trtype=("mptcp",), paths=(1,), iopolicy=("numa",), loss=(False,))
def test_script(request, trtype, network, paths, iopolicy, record_property, prove_transport):
    """nvme over {trtype} test"""
    tls = request.config.getoption("tls")
    host_iface = request.config.getoption("host_iface")
    if tls:
        require(request.config, *TLS_NEEDS, f"tls:{trtype}")
    target = request.getfixturevalue("tls_target" if tls else "target")
    nvme_host = request.getfixturevalue("tls_host" if tls else "nvme_host")
    first = network.topology.links[0]
    records = nvme_host.discover(trtype, first.traddr, target.trsvcid, tls=tls,
                                 host_iface=host_iface)
    assert any(r.subnqn == target.nqn for r in records), f"{target.nqn} not in the discovery log"
    traddrs = network.topology.traddrs[:paths]
    with nvme_host.connected(trtype, traddrs, target.trsvcid, target.nqn, tls=tls,
                             host_iface=host_iface) as connection:
        ctrls = prove_transport(nvme_host, target.nqn)
        if host_iface:
            assert not bound_to(network, host_iface, ctrls), bound_to(network, host_iface, ctrls)
        listed = [d.get("DevicePath") for d in nvme_host.nvme_list().get("Devices", [])]
        record_property(DIAG, f"nvme list: {', '.join(map(str, listed)) or 'no devices'}")
        nvme_host.set_iopolicy(target.nqn, iopolicy)
        assert nvme_host.iopolicy(target.nqn) == iopolicy
        before = network.link_counters()
        job = quick.fio_job(request.config, fio.FioJob(runtime=request.config.getoption("runtime")))
        results = fio.run_script_sequence(connection.device, job, prefix=network.host.argv())
        moved = network.link_bytes_since(before)
    read, write = results["randread"].read, results["randwrite"].write
    record_property(DIAG, f"READ: bw={read.mib_per_s:.1f}MiB/s WRITE: bw={write.mib_per_s:.1f}MiB/s")
    record_property(DIAG, f"bytes per link, target->host: {moved.format('rx', shares=False)}; "
                          f"host->target: {moved.format('tx', shares=False)}")
