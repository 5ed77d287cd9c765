"""NVMe commands over each transport, the ones blktests' nvme group checks over tcp
(README "blktests parity" maps each blktests test to its case here): namespace
identifiers (nvme/004, nvme/026), nvme-cli write, flush and read with a data compare
(nvme/014, nvme/029), a read past the namespace end (nvme/018), deallocate and write
zeroes (nvme/019, nvme/065), nvme list (nvme/021), the commands supported and effects
log (nvme/025) and reservations between two hosts (nvme/054). One path: these are about
the commands, not the paths (test_admin.py and test_datapath.py cover several)."""

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from mptcp_nvme.guest import (
    DIAG, commands, initiator, nvme_multipath, target as nvmet, wait_for)

NGUID = "f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f"    # set on the namespace before it is enabled
BLOCKS = 8                                         # the blocks each data case touches
OPCODES = {"flush": 0x00, "write": 0x01, "read": 0x02, "write zeroes": 0x08,
           "dataset management": 0x09}
ADMIN_OPCODES = {"get log page": 0x02, "identify": 0x06, "set features": 0x09,
                 "get features": 0x0A, "keep alive": 0x18}


@pytest.fixture
def target(make_target):
    return make_target(namespace_attributes={"device_nguid": NGUID})


@pytest.fixture
def block_size(connection, nvme_host):
    namespace = nvme_host.admin(["id-ns", connection.device])
    return 2 ** namespace["lbafs"][namespace["flbas"] & 0xF]["ds"]


@pytest.fixture
def data_files(tmp_path, block_size):
    """(a file of BLOCKS blocks of a pattern no block repeats, where reads land)."""
    pattern = tmp_path / "pattern"
    pattern.write_bytes(os.urandom(BLOCKS * block_size))
    return pattern, tmp_path / "read"


def rw_argv(verb, device, path, block_size, start=0, blocks=BLOCKS):
    """nvme read/write of ``blocks`` blocks from ``start`` (nvme-cli counts from 0)."""
    return [verb, device, f"--start-block={start}", f"--block-count={blocks - 1}",
            f"--data-size={blocks * block_size}", f"--data={path}"]


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_namespace_identifiers(connection, nvme_host, target, record_property):
    """the namespace's UUID and NGUID as nvmet has them, over {trtype}: ns-descs and id-ns (blktests nvme/004, nvme/026)"""
    uuid = nvmet.Configfs().read(target.subsystem.namespace_path() / "device_uuid")
    descriptors = commands.ns_descriptors(nvme_host.admin(["ns-descs", connection.device]))
    identify = nvme_host.admin(["id-ns", connection.device])
    record_property(DIAG, f"ns-descs: {descriptors}")
    assert descriptors.get("uuid") == uuid, (descriptors, uuid)
    assert descriptors.get("nguid") == identify["nguid"] == NGUID.replace("-", ""), (
        descriptors, identify["nguid"])
    # nvmet has no EUI-64 attribute: the descriptor is absent, id-ns reads zeroes
    assert "eui64" not in descriptors and int(identify["eui64"], 16) == 0, identify["eui64"]
    assert descriptors.get("csi") == "0", descriptors          # the NVM command set


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_write_flush_read_compare(connection, nvme_host, data_files, block_size):
    """nvme-cli write, flush and read over {trtype}: the blocks read back are the blocks written (blktests nvme/014, nvme/029)"""
    pattern, readback = data_files
    for start in (0, 1024):        # the first blocks and some further in
        nvme_host.run_nvme(rw_argv("write", connection.device, pattern, block_size, start))
        nvme_host.flush(connection.device)
        nvme_host.run_nvme(rw_argv("read", connection.device, readback, block_size, start))
        assert readback.read_bytes() == pattern.read_bytes(), f"blocks from {start} differ"


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_read_past_the_end_fails_with_a_status(connection, nvme_host, tmp_path, block_size,
                                               record_property):
    """a read past the namespace end over {trtype} fails with an NVMe status and the controller stays live (blktests nvme/018)"""
    size = nvme_host.admin(["id-ns", connection.device])["nsze"]
    _, status = nvme_host.status_of(rw_argv("read", connection.device, tmp_path / "past",
                                            block_size, start=size, blocks=1))
    record_property(DIAG, f"read of block {size} of {size}: {status}")
    assert status is not None, f"reading block {size} of a {size}-block namespace succeeded"
    assert status.do_not_retry, status
    assert nvme_host.controller(connection.controllers[0]).state == "live"
    # and the namespace still reads where it has blocks
    nvme_host.run_nvme(rw_argv("read", connection.device, tmp_path / "last", block_size,
                               start=size - 1, blocks=1))


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.parametrize("command", ["dsm-deallocate", "write-zeroes", "write-zeroes-deac"])
def test_blocks_read_back_as_zeroes(request, command, connection, nvme_host, data_files,
                                    block_size):
    """{command} over {trtype}: the blocks read back as zeroes (blktests nvme/019, nvme/065)"""
    if command == "dsm-deallocate" and request.getfixturevalue("backing") == "null_blk":
        pytest.skip("null_blk's discard does not zero what it drops")
    pattern, readback = data_files
    nvme_host.run_nvme(rw_argv("write", connection.device, pattern, block_size))
    if command == "dsm-deallocate":
        # deallocated blocks read as zeroes where the backing punches holes (loop, file):
        # the namespace's DLFEAT promises nothing
        nvme_host.run_nvme(["dsm", connection.device, "--ad", "--slbs=0", f"--blocks={BLOCKS}"])
    else:
        nvme_host.run_nvme(["write-zeroes", connection.device, "--start-block=0",
                            f"--block-count={BLOCKS - 1}",
                            *(["--deac"] if command.endswith("deac") else [])])
    nvme_host.run_nvme(rw_argv("read", connection.device, readback, block_size))
    assert readback.read_bytes() == bytes(BLOCKS * block_size), f"{command}: not zeroes"


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_list_and_supported_commands(connection, nvme_host, target, backing_device,
                                     record_property):
    """nvme list shows the namespace as nvmet exports it, the effects log the commands the suite uses, over {trtype} (blktests nvme/021, nvme/025)"""
    cfs = nvmet.Configfs()
    listed = [d for d in nvme_host.nvme_list().get("Devices", [])
              if d.get("DevicePath") == connection.device]
    assert len(listed) == 1, nvme_host.nvme_list()
    device = listed[0]
    assert device["SerialNumber"].strip() == cfs.read(target.subsystem.path / "attr_serial")
    assert device["ModelNumber"].strip() == cfs.read(target.subsystem.path / "attr_model")
    assert device["PhysicalSize"] == nvmet.device_size(backing_device), device
    assert device["NameSpace"] == 1, device

    # the NVM command set's log: asked for every set, nvme-cli 2.13 fails the whole command
    # where nvmet lacks the zoned one (a kernel without BLK_DEV_ZONED, as the test kernel)
    supported = commands.supported_commands(
        nvme_host.admin(["effects-log", f"/dev/{connection.controllers[0]}", "--csi=0"]))
    nvm = supported.get(0)
    assert nvm is not None, f"no NVM command set in the effects log: {sorted(supported)}"
    missing = [name for name, opcode in OPCODES.items() if opcode not in nvm["io"]]
    missing += [name for name, opcode in ADMIN_OPCODES.items() if opcode not in nvm["admin"]]
    record_property(DIAG, f"effects log: command sets {sorted(supported)}, NVM I/O opcodes "
                          + " ".join(f"0x{op:02x}" for op in sorted(nvm["io"])))
    assert not missing, f"the effects log lacks {', '.join(missing)}"


HOSTS = {"A": "nqn.2014-08.org.nvmexpress:uuid:5b7f0b58-8d8c-4c0f-9d55-0d1e6c2a1f01",
         "B": "nqn.2014-08.org.nvmexpress:uuid:5b7f0b58-8d8c-4c0f-9d55-0d1e6c2a1f02"}
KEYS = {"A": 0xA1, "B": 0xB2}
WRITE_EXCLUSIVE = 1


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_reservations_across_two_hosts(backing_device, network, trtype, prove_transport,
                                       tmp_path, record_property):
    """register, acquire, report, preempt and release a reservation from two host NQNs over {trtype}: the holder alone writes (blktests nvme/054)"""
    traddr = network.topology.traddrs[0]
    block = tmp_path / "block"
    block.write_bytes(bytes(512))
    hosts = {name: initiator.NvmeHost(prefix=network.host.argv(), hostnqn=nqn)
             for name, nqn in HOSTS.items()}
    steps = []
    # each host's own namespace device: native multipath would merge both into one head
    # (nvme_core reloaded: before the target exists, after it is gone)
    with nvme_multipath.multipath_mode(native=False), \
            nvmet.Target(backing_device, trtype, [traddr], in_target_netns=network.target.enter,
                         namespace_attributes={"resv_enable": "1"}) as target, \
            ExitStack() as connected:
        device = {}
        for name, host in hosts.items():
            ctrl = host.connect(trtype, traddr, target.trsvcid, target.nqn)
            connected.callback(host.delete_controller, ctrl)
            device[name] = wait_for(lambda: next(Path("/sys/class/nvme", ctrl).glob(
                f"{ctrl}n*"), None), f"{ctrl}'s namespace", timeout=10).name
        prove_transport(hosts["A"], target.nqn)
        a, b = (hosts[n] for n in "AB")
        dev_a, dev_b = (f"/dev/{device[n]}" for n in "AB")

        def report(via):
            found = commands.reservation_report(
                hosts[via].admin(["resv-report", f"/dev/{device[via]}"]))
            steps.append(f"gen {found.generation} rtype {found.rtype}, "
                         f"{len(found.registrants)} registrant(s)")
            return found

        def write_status(name):
            return hosts[name].status_of(["write", f"/dev/{device[name]}", "--block-count=0",
                                          "--data-size=512", f"--data={block}"])[1]

        for name in "AB":
            hosts[name].run_nvme(["resv-register", f"/dev/{device[name]}",
                                  f"--nrkey={KEYS[name]}", "--rrega=0"])
        a.run_nvme(["resv-acquire", dev_a, f"--crkey={KEYS['A']}",
                    f"--rtype={WRITE_EXCLUSIVE}", "--racqa=0"])
        held = report("B")
        assert held.rtype == WRITE_EXCLUSIVE and len(held.registrants) == 2, held
        assert _same_host(held.holder.hostid, a.hostid), held
        assert write_status("A") is None
        conflict = write_status("B")
        assert conflict is not None and conflict.name == "Reservation Conflict", conflict

        b.run_nvme(["resv-acquire", dev_b, f"--crkey={KEYS['B']}", f"--prkey={KEYS['A']}",
                    f"--rtype={WRITE_EXCLUSIVE}", "--racqa=1"])          # preempt A
        preempted = report("A")
        assert [r.rkey for r in preempted.registrants] == [KEYS["B"]], preempted
        assert _same_host(preempted.holder.hostid, b.hostid), preempted
        assert write_status("B") is None

        b.run_nvme(["resv-release", dev_b, f"--crkey={KEYS['B']}",
                    f"--rtype={WRITE_EXCLUSIVE}", "--rrela=0"])
        b.run_nvme(["resv-register", dev_b, f"--crkey={KEYS['B']}", "--rrega=1"])
        released = report("B")
        assert released.rtype == 0 and not released.registrants, released
        assert write_status("A") is None
    record_property(DIAG, "reservation: " + "; ".join(steps))


def _same_host(reported, hostid):
    """A reservation report's 128-bit host id (hex) against a host id (UUID)."""
    return reported.replace("-", "").lower() == hostid.replace("-", "").lower()
