"""Iopolicies on a topology whose paths differ in speed (topologies/asymmetric.toml): the
latency-aware ones of newer kernels (weighted-lat and adaptive, from seed 001's review
thread) must send more of the I/O down the faster paths. They SKIP naming the iopolicy
where nvme_core does not offer it. queue-depth, in every kernel this suite knows, runs
the same check, which shows the measurement can tell.

The links are scaled so that the fastest is at RATE (links, not the guest's CPU, must be
the bottleneck under TCG), the slow one keeping its half. Over MPTCP the endpoints are
off, so that each controller stays on its own link: with subflows on every link, no
iopolicy could prefer a link by choosing a path. Which path carried the I/O is read
from each path's block statistics.
"""

from dataclasses import replace

import pytest

from mptcp_nvme.guest import DIAG, fio, judge_link_limited, quick, topology

POLICIES = ("queue-depth", "weighted-lat", "adaptive")
RATE = "30mbit"
SLOW = "slow"                 # the slower link's name in asymmetric.toml
FAVOUR = 0.8                  # the slow path carries less than this x each fast path
JOB = fio.FioJob(rw="randread", numjobs=2, iodepth=32, bs="64k", runtime=6)


@pytest.fixture
def topo(trtype):
    loaded = topology.scaled_to(topology.load_topology(topology.TOPOLOGY_DIR / "asymmetric.toml"),
                                RATE)
    if trtype == "mptcp":
        loaded = replace(loaded, target=replace(loaded.target, endpoint_flags=()),
                         host=replace(loaded.host, endpoint_flags=()))
    return loaded


@pytest.mark.matrix(trtype=("tcp", "mptcp"), iopolicy=POLICIES)
def test_iopolicy_prefers_faster_paths(iopolicy, trtype, connection, nvme_host, network,
                                       record_property, request):    # iopolicy first: SKIP early
    """iopolicy {iopolicy} over {trtype} on asymmetric.toml: the faster paths carry more I/O than the slow one"""
    nvme_host.set_iopolicy(connection.nqn, iopolicy)
    disks = nvme_host.path_disks(connection.nqn)
    links = {link.traddr: link for link in network.topology.links}
    link_of = {ctrl: links[nvme_host.controller(ctrl).address["traddr"]].name for ctrl in disks}
    assert sorted(link_of.values()) == sorted(links[t].name for t in links), link_of

    before = fio.sectors_per_path(disks)
    result = fio.run(quick.fio_job(request.config, JOB), connection.device, network.host.argv())
    spread = {link_of[ctrl]: share for ctrl, share
              in fio.path_shares(before, fio.sectors_per_path(disks)).items()}
    rates = {link.name: link.netem.rate_bit / 1e6 for link in network.topology.links}
    record_property(DIAG, f"{iopolicy} {result.read.mib_per_s:.1f} MiB/s; I/O per path: " + " ".join(
        f"{name}({rates[name]:g}mbit)={share:.0%}" for name, share in sorted(spread.items())))
    slowest = min(rates, key=rates.get)
    assert slowest == SLOW, rates
    fast = {name: share for name, share in spread.items() if name != SLOW}
    problems = [] if spread[SLOW] < FAVOUR * min(fast.values()) else [
        f"{iopolicy}: the {rates[SLOW]:g} Mbit/s path carried {spread[SLOW]:.0%}, not less "
        f"than {FAVOUR} x the least of the faster paths ({min(fast.values()):.0%})"]
    # a path is slower only where its link is what limits it
    judge_link_limited(problems, network.topology.links, result.read.mib_per_s * 8 * 2**20)
