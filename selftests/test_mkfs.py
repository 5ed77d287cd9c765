"""File systems on the multipath namespace, on each transport: mkfs, mount, a tree of
files with checksums, unmount, disconnect; then reconnect, fsck, mount and compare."""

import pytest

from mptcp_nvme.guest import DIAG, filesystem, require


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,))
@pytest.mark.parametrize("fstype", filesystem.FILESYSTEMS)
def test_mkfs(request, fstype, trtype, network, target, nvme_host, prove_transport,
              record_property):
    """mkfs {fstype} on the multipath namespace over {trtype}: the files come back after disconnect, reconnect and fsck"""
    require(request.config, *filesystem.FILESYSTEMS[fstype][2])
    traddrs = network.topology.traddrs
    with nvme_host.connected(trtype, traddrs, target.trsvcid, target.nqn) as conn:
        prove_transport(nvme_host, conn.nqn)
        filesystem.mkfs(fstype, conn.device)
        with filesystem.mounted(conn.device, fstype) as root:
            written = filesystem.write_tree(root, seed=request.node.name)
        first = conn.device

    with nvme_host.connected(trtype, traddrs, target.trsvcid,
                             target.nqn) as conn:
        prove_transport(nvme_host, conn.nqn)
        assert filesystem.fstype_of(conn.device) == fstype, conn.device
        report = filesystem.fsck(fstype, conn.device)
        with filesystem.mounted(conn.device, fstype, options=("ro",)) as root:
            read = filesystem.checksums(root)
    changed = sorted(set(written) ^ set(read) | {p for p in written if read.get(p) != written[p]})
    assert not changed, f"after reconnect these files differ or are missing: {changed}"
    record_property(DIAG, f"{fstype} on {first} then {conn.device}: {len(written)} files, "
                          f"{len(network.topology.traddrs)} paths, fsck clean"
                          + (f" ({report.strip().splitlines()[-1]})" if report.strip() else ""))
