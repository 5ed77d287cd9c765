"""A fixed subset of the topology corpus (mptcp_nvme/topology_corpus.py) in CI: a file
as a user writes it (ipv4, v4map and ipv6 links at 200/100/50 Mbit/s, delay and jitter
on one), kept outside the tree, through --topology: the tcp cases on the stock kernel,
the mptcp ones on the test kernel, every test of the selection taking its paths from the
file. ci/topology-corpus runs the whole corpus (every edge, random seeds)."""

import os

import pytest

from mptcp_nvme import topology_corpus

from .conftest import REPO

pytestmark = pytest.mark.vm

CORPUS_CASE = "mixed-v4map"
# one case of each kind of expectation the topology sets: paths counted, ANA on every
# path, shares and the MPTCP stream's floors derived from the links' rates
SELECTION = ("test_connect", "test_ana_states_steer_io and numa", "test_mptcp_socket")
OVER_MPTCP = ("test_mptcp_connect_to_tcp_port_is_caught",)   # a first link that is not IPv4
FILES = [REPO / "selftests" / name for name in ("test_datapath.py", "test_ana.py")]
KERNEL = os.environ.get("MPTCP_NVME_TEST_KERNEL")


@pytest.fixture
def corpus_file(tmp_path):
    return topology_corpus.write(tmp_path, {CORPUS_CASE: topology_corpus.edges()[CORPUS_CASE]})[
        CORPUS_CASE]


@pytest.mark.parametrize("kernel, trtype", [("stock", "tcp"), ("test", "mptcp")])
def test_a_corpus_topology_passes(mptcp_nvme, corpus_file, kernel, trtype):
    if kernel == "test" and not KERNEL:
        pytest.skip("MPTCP_NVME_TEST_KERNEL is not set (./ci/test sets it)")
    kernel_args = ("--kernel", KERNEL) if kernel == "test" else ()
    selection = SELECTION + (OVER_MPTCP if trtype == "mptcp" else ())
    run = mptcp_nvme("run", "-n", "2", "--quick", "--topology", corpus_file, "--trtype", trtype,
                     "--expect-all-features", *kernel_args, "-k",
                     " or ".join(f"({part})" for part in selection), *FILES)
    assert run.code == 0, run.stdout[-4000:] + run.stderr[-2000:]
    ran = [r for r in run.results if r.directive != "SKIP"]
    assert len(ran) == len(selection), run.stdout[-3000:]
    assert all(r.ok for r in ran), run.stdout[-3000:]
    assert "3path" in run.stdout and "network: 3 link(s)" in run.stdout
    assert run.all_leftovers() and not any(any(left.values())
                                           for left in run.all_leftovers().values())
