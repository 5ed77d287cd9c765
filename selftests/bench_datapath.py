"""Benchmark cases (not part of the suite; run by ci/bench-datapath, which takes medians).

Every link is limited to BENCH_RATE so that links, not the TCG guest's CPU, bound the
throughput: 4 paths can then carry up to 4x what one does.
"""

import pytest

from mptcp_nvme import fio, stream, topology
from mptcp_nvme.plugin import DIAG

BENCH_RATE = "80mbit"
RUNS = (1, 2, 3)
READ_JOB = fio.FioJob(rw="randread", runtime=8, iodepth=64)


@pytest.fixture
def topo(paths):
    return topology.with_rate(topology.topology_for_paths(paths), BENCH_RATE)


@pytest.mark.matrix(trtype=("tcp",), paths=(4,), iopolicy=("numa", "round-robin"))
@pytest.mark.parametrize("run", RUNS)
def test_bench_nvme_read(connection, nvme_host, network, iopolicy, run, record_property):
    """bench nvme-tcp 4 paths {iopolicy}"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    result = fio.run(READ_JOB, connection.device, network.host.argv())
    record_property(DIAG, f"bench nvme-tcp-4path-{iopolicy} run {run}: "
                          f"{result.read.mib_per_s:.2f} MiB/s")


@pytest.mark.matrix(paths=(1, 4))
@pytest.mark.parametrize("run", RUNS)
def test_bench_stream(network, paths, run, record_property):
    """bench socket stream over {paths} paths"""
    protocol = "mptcp" if paths > 1 else "tcp"
    result = stream.measure(network, seconds=8, protocol=protocol, expect_subflows=paths - 1)
    record_property(DIAG, f"bench stream-{protocol}-{paths}path run {run}: "
                          f"{result.mbit_per_s:.2f} Mbit/s")
