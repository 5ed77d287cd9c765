"""Backing stores (loop, file, null_blk), several namespaces in a subsystem and several
subsystems on a port, on each transport.

One target: subsystem A with namespaces 1 and 2, subsystem B with namespace 1, both on
every port, each namespace on its own store of the kind under test and of its own size.
The host connects to both over every path. Each namespace must be the store it was
configured with: its size, the active namespace list of its controller, verified fio
through it, and a block written through the fabric found in that store (read back on
the target, with O_DIRECT) and in no other.
"""

import mmap
import os
from contextlib import ExitStack

import pytest

from mptcp_nvme.guest import DIAG, fio, target as nvmet

SIZES = {("A", 1): 512 * 2**20, ("A", 2): 64 * 2**20, ("B", 1): 96 * 2**20}
SIGNATURE_OFFSET = 2**20
BLOCK = 4096
VERIFY = fio.FioJob(rw="randwrite", bs="64k", numjobs=1, iodepth=16, size=fio.VERIFY_SIZE).verifying()


def write_direct(path, offset, data):
    """One aligned O_DIRECT write (through the fabric: no page cache in between)."""
    buffer = mmap.mmap(-1, len(data))          # page-aligned, as O_DIRECT wants
    buffer.write(data)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [buffer], offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_direct(path, offset, size):
    """One aligned O_DIRECT read: what the store holds, not what a page cache kept."""
    buffer = mmap.mmap(-1, size)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        os.preadv(fd, [buffer], offset)
    finally:
        os.close(fd)
    return bytes(buffer)


def signature(name, nsid, backing):
    return f"mptcp-nvme subsystem {name} namespace {nsid} on {backing}".encode().ljust(BLOCK, b".")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(2,))
def test_backing_namespaces_and_subsystems(backing, trtype, network, make_target, make_backing,
                                           backing_device, nvme_host, prove_transport,
                                           record_property):
    """backing {backing}: two namespaces in a subsystem and a second subsystem on the same ports over {trtype}"""
    target = make_target()
    store = {("A", 1): backing_device,
             ("A", 2): make_backing(backing, SIZES[("A", 2)]).path,
             ("B", 1): make_backing(backing, SIZES[("B", 1)]).path}
    target.subsystem.add_namespace(2, store[("A", 2)])
    second = target.add_subsystem(nvmet.make_nqn(trtype), store[("B", 1)])
    nqns = {"A": target.nqn, "B": second.nqn}
    with ExitStack() as connections:
        conns = {name: connections.enter_context(nvme_host.connected(
                     trtype, network.topology.traddrs, target.trsvcid, nqn))
                 for name, nqn in nqns.items()}
        for nqn in nqns.values():
            prove_transport(nvme_host, nqn)

        for name, conn in conns.items():
            listed = nvme_host.admin(["list-ns", f"/dev/{conn.controllers[0]}"])
            active = sorted(entry["nsid"] for entry in listed["nsid_list"])
            assert active == sorted(n for s, n in SIZES if s == name), (name, listed)

        devices = {key: nvme_host.namespace_device(nqns[key[0]], key[1]) for key in SIZES}
        for key, device in devices.items():
            assert nvmet.device_size(device) == SIZES[key] == nvmet.device_size(store[key]), (
                key, device)
            result = fio.run(VERIFY, device, prefix=network.host.argv())
            assert result.read.io_bytes == result.write.io_bytes > 0, (key, result)
            write_direct(device, SIGNATURE_OFFSET, signature(*key, backing))

        for key, path in store.items():
            found = read_direct(path, SIGNATURE_OFFSET, BLOCK)
            assert found == signature(*key, backing), (
                f"{path} ({backing}, namespace {key[1]} of {key[0]}) holds {found[:64]!r}")
        record_property(DIAG, f"{backing}: " + ", ".join(
            f"{name} ns{nsid} {devices[(name, nsid)]} = {store[(name, nsid)]} "
            f"({SIZES[(name, nsid)] >> 20} MiB)" for name, nsid in SIZES)
            + f"; {len(network.topology.traddrs)} paths each, verified fio and a signature "
              "block each")
