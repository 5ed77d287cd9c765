"""Benchmark cases (not part of the suite: pytest collects test_*.py only; ci/bench-datapath
runs this file and takes medians).

Every link is limited to BENCH_RATE so that links, not the TCG guest's CPU, bound the
throughput: NVMe over MPTCP under TCG here tops out near 20-28 MiB/s in all, so 4 links
of 30 Mbit/s (14.3 MiB/s together) leave the guest headroom. As in mptcp_nvme.sh, the
topology always has 4 links and ``paths`` is the number of NVMe connections.
"""

import pytest

from mptcp_nvme.guest import DIAG, fio, stream, topology

BENCH_RATE = "30mbit"
RUNS = (1, 2, 3)
JOB = fio.FioJob(runtime=8, iodepth=64)


@pytest.fixture
def topo(paths):
    return topology.script_topology(paths, rate=BENCH_RATE)


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1, 4), iopolicy=("numa",))
@pytest.mark.parametrize("run", RUNS)
def test_bench_nvme(target, nvme_host, network, trtype, paths, iopolicy, run, record_property,
                    prove_transport):
    """bench nvme-{trtype} {paths} connections {iopolicy}"""
    traddrs = network.topology.traddrs[:paths]
    with nvme_host.connected(trtype, traddrs, target.trsvcid, target.nqn) as connection:
        prove_transport(nvme_host, connection.nqn)
        nvme_host.set_iopolicy(connection.nqn, iopolicy)
        results = fio.run_script_sequence(connection.device, JOB, network.host.argv())
    read, write = results["randread"].read, results["randwrite"].write
    name = f"nvme-{trtype}-{paths}path-{iopolicy}"
    record_property(DIAG, f"bench {name}-read run {run}: {read.mib_per_s:.2f} MiB/s")
    record_property(DIAG, f"bench {name}-write run {run}: {write.mib_per_s:.2f} MiB/s")
    assert read.io_bytes > 0 and write.io_bytes > 0


@pytest.mark.matrix(trtype=("tcp",), paths=(4,), iopolicy=("round-robin",))
@pytest.mark.parametrize("run", RUNS)
def test_bench_nvme_rr(connection, nvme_host, network, iopolicy, run, record_property):
    """bench nvme-tcp 4 paths {iopolicy}"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    result = fio.run(JOB, connection.device, network.host.argv())
    record_property(DIAG, f"bench nvme-tcp-4path-{iopolicy}-read run {run}: "
                          f"{result.read.mib_per_s:.2f} MiB/s")
    assert result.read.io_bytes > 0


@pytest.mark.matrix(paths=(1, 4))
@pytest.mark.parametrize("run", RUNS)
def test_bench_stream(network, paths, run, record_property):
    """bench socket stream over {paths} paths"""
    protocol = "mptcp" if paths > 1 else "tcp"
    result = stream.measure(network, seconds=8, protocol=protocol,
                            expect_subflows=paths - 1 if paths > 1 else 0)
    record_property(DIAG, f"bench stream-{protocol}-{paths}path run {run}: "
                          f"{result.mbit_per_s:.2f} Mbit/s")
    assert result.received > 0
