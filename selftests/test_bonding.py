"""NVMe/TCP over Linux bonding, the alternative the series' reviewers asked about ("how is
this different from what IP/NIC bonding would give, without an NVMe change?"): one bond
of every link on each side (topology.bonded: miimon, layer3+4 hashing, fast LACP
negotiated between the two namespaces for 802.3ad), one NVMe/TCP controller on the
bond's address with as many I/O queues as the guest has CPUs. crc32c-verified writes
must read back intact in every mode, and the links (the bond's slaves) must carry what
the mode says: active-backup one link, balance-rr every link, the hashing modes
(balance-xor, 802.3ad) each flow on one link, so no more links than the controller has
queue connections. How fast each is against native multipath and MPTCP is the matrix's
question, not a test's.
"""

import os

import pytest

from mptcp_nvme.guest import BOND_MODES, DIAG, fio, topology

LINKS = 4
ACTIVE_BACKUP_SHARE = 0.90      # active-backup: the active slave carries (nearly) everything
SPREAD_SHARE = 0.10             # balance-rr: every slave carries at least this
CARRYING = 0.05                 # a slave with this much of the bytes carries a flow's data


@pytest.fixture
def topo(request, bond_mode):
    return topology.bonded(topology.topology_for_paths(
        LINKS, rate=request.config.getoption("rate")), bond_mode)


@pytest.mark.matrix(trtype=("tcp",))
@pytest.mark.parametrize("bond_mode", BOND_MODES)
@pytest.mark.requires("module:bonding", "tool:fio")
def test_bond_fio_verify(bond_mode, trtype, network, target, nvme_host, prove_transport,
                         record_property):
    """NVMe over {trtype} on a bond of 4 links in {bond_mode} mode: verified writes read back intact, and the links carry the bytes as the mode spreads them"""
    queues = os.cpu_count()
    with nvme_host.connected(trtype, network.topology.traddrs, target.trsvcid, target.nqn,
                             options={"nr_io_queues": queues}) as connection:
        proven = prove_transport(nvme_host, connection.nqn)
        before = network.link_counters()
        job = fio.FioJob(numjobs=queues, iodepth=32, size=fio.VERIFY_SIZE).verifying()
        result = fio.run(job, connection.device, network.host.argv())
        moved = network.link_bytes_since(before)
    shares = moved.shares()
    connections = sum(len(c.queues) for c in proven)
    record_property(DIAG, f"{bond_mode}: verified {result.read.io_bytes} bytes over "
                          f"{connections} queue connections; bytes per link: {moved.format()}")
    assert result.read.io_bytes == result.write.io_bytes > 0
    carrying = [name for name, share in shares.items() if share >= CARRYING]
    if bond_mode == "active-backup":
        assert max(shares.values()) >= ACTIVE_BACKUP_SHARE, (
            f"active-backup spread the bytes: {moved.format()}")
    elif bond_mode == "balance-rr":
        assert min(shares.values()) >= SPREAD_SHARE, (
            f"balance-rr left a link below {SPREAD_SHARE:.0%}: {moved.format()}")
    else:       # per-flow hashing: a flow never spans links
        assert 1 <= len(carrying) <= connections, (
            f"{bond_mode} spread {connections} connections over {len(carrying)} links: "
            f"{moved.format()}")
