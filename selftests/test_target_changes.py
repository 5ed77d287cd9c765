"""The target changes under a connected host, on each transport: what blktests' nvme group
checks over tcp (README "blktests parity" maps each blktests test to its case here).
The discovery log's generation counter (nvme/030) and a persistent discovery controller
(nvme/003), a namespace that grows (nvme/027), is enabled and disabled in a loop
(nvme/051) and remapped to other devices (nvme/058), controllers deleted right after
they were set up (nvme/031), a subsystem deleted without ever being enabled (nvme/038),
the multipath head outliving its last path (nvme/068), the target torn down for good
under I/O (nvme/061); and, with the host side in the initial netns where a controller
must reconnect (TestReconnecting), the queue count after attr_qid_max changes (nvme/048)
and target-side resets through nvmet's debugfs (nvme/060)."""

import os
import re
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from mptcp_nvme.guest import (
    DIAG, KernelLog, faults, fio, samples_over, target as nvmet, topology, wait_for)

MiB = 2**20
TOGGLES = 200            # nvme/051's enable/disable cycles
REMAPS = 10              # namespace remaps (nvme/058 remaps in a loop for its runtime)
DELETES = 10             # nvme/031's connect-and-delete cycles
KATO_S, KEEP_ALIVES = 1, 5          # nvme/003: a discovery controller's keep-alive window
DELAYED_REMOVAL_S = 30              # nvme/068: the head outlives its paths this long
CTRL_LOSS_S = 3                     # nvme/061: how long a controller outlives its target
RESETS = 3                          # nvme/060's target-side resets
JOB_AFTER = fio.FioJob(rw="randread", runtime=None, time_based=False, size="4m", numjobs=1,
                       iodepth=16)
JOB_DURING = fio.FioJob(rw="randread", runtime=120, numjobs=1, iodepth=16, bs="4k")
# The head's partition scan reads the namespace when it appears; a namespace disabled or a
# controller deleted under that scan fails its reads, rightly: "Buffer I/O error" lines
# that these cases cause on purpose (seen on 7.3.4 for nvme/031 and, 1 run in 4, nvme/051)
SCAN_READ_FAILED = r"Buffer I/O error on dev nvme\d+n\d+, logical block \d+, async page read"


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_discovery_generation_counter(target, nvme_host, network, trtype, make_backing,
                                      record_property):
    """the discovery log's generation counter over {trtype} moves when a subsystem or a port comes or goes (blktests nvme/030)"""
    traddr, cfs = network.topology.traddrs[0], nvmet.Configfs()
    port = target.ports[0]
    seen = []

    def changed(event):
        genctr, records = nvme_host.discovery_log(trtype, traddr, target.trsvcid)
        if seen:
            assert genctr != seen[-1][1], f"genctr stayed {genctr} after {event}: {seen}"
        seen.append((event, genctr))
        return {r.subnqn for r in records}

    changed("start")
    other = nvmet.Subsystem(cfs, nvmet.make_nqn(trtype), make_backing("file", 16 * MiB).path)
    with ExitStack() as added:
        added.enter_context(other)
        port.link(other, network.target.enter, stack=added)
        assert other.nqn in changed("subsystem added")
    assert other.nqn not in changed("subsystem removed")
    with target.another_port() as second:
        second.link(target.subsystem, network.target.enter)
        changed("port added")
    changed("port removed")
    record_property(DIAG, "genctr: " + ", ".join(f"{event} {genctr}" for event, genctr in seen))


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_grown_namespace_is_rescanned(network, nvme_host, trtype, make_backing, prove_transport,
                                      record_property):
    """a file-backed namespace grows, nvmet revalidates it, the host's rescan sees the new size over {trtype} (blktests nvme/027)"""
    store = make_backing("file", 64 * MiB)
    with nvmet.Target(store.path, trtype, network.topology.traddrs,
                      in_target_netns=network.target.enter) as target, \
            nvme_host.connected(trtype, network.topology.traddrs, target.trsvcid,
                                target.nqn) as connection:
        prove_transport(nvme_host, connection.nqn)
        before = nvme_host.namespace_sectors(connection.nqn)
        os.truncate(store.path, 96 * MiB)
        nvmet.Configfs().write(target.subsystem.namespace_path() / "revalidate_size", "1")
        nvme_host.run_nvme(["ns-rescan", f"/dev/{connection.controllers[0]}"])
        wait_for(lambda: nvme_host.namespace_sectors(connection.nqn) == 96 * MiB // 512,
                 f"{connection.device} to grow to {96 * MiB // 512} sectors", timeout=15)
    record_property(DIAG, f"{connection.device}: {before} -> {96 * MiB // 512} sectors")
    assert before == 64 * MiB // 512


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.kernel_log_expected(SCAN_READ_FAILED)     # a scan of a namespace disabled under it
def test_namespace_enable_disable_loop(connection, nvme_host, target, record_property):
    """namespace 1 disabled and enabled 200 times under a connected host over {trtype}: the host ends with it, readable (blktests nvme/051)"""
    for _ in range(TOGGLES):
        target.subsystem.enable_namespace(1, False)
        target.subsystem.enable_namespace(1, True)
    device = nvme_host.namespace_device(connection.nqn, timeout=30)
    nvme_host.run_nvme(["read", device, "--block-count=0", "--data-size=512", "--data=/dev/null"])
    assert nvme_host.controller(connection.controllers[0]).state == "live"
    record_property(DIAG, f"{TOGGLES} disable/enable cycles, {device} readable after")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.kernel_log_expected(SCAN_READ_FAILED)     # a scan of a namespace disabled under it
def test_namespace_remapped(connection, nvme_host, target, make_backing, record_property):
    """namespace 1 remapped 10 times between two files of other sizes over {trtype}: the host follows each (blktests nvme/058)"""
    stores = [make_backing("file", 32 * MiB), make_backing("file", 48 * MiB)]
    for turn in range(REMAPS):
        store = stores[turn % 2]
        target.subsystem.remap_namespace(1, store.path)
        wanted = store.size // 512
        wait_for(lambda: nvme_host.namespace_sectors(connection.nqn) == wanted,
                 f"namespace 1 of {connection.nqn} at {wanted} sectors", timeout=30)
    record_property(DIAG, f"{REMAPS} remaps between {stores[0].size // MiB} and "
                          f"{stores[1].size // MiB} MiB files, each size seen by the host")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
# the multipath head's partition scan, started when its first path went live, reads
# through a controller already being deleted: those reads fail, as they must
@pytest.mark.kernel_log_expected(SCAN_READ_FAILED)
def test_controllers_deleted_right_after_setup(target, network, nvme_host, trtype,
                                               record_property):
    """10 controllers over {trtype} deleted as soon as connect returns: none left behind (blktests nvme/031)"""
    traddr = network.topology.traddrs[0]
    for _ in range(DELETES):
        name = nvme_host.connect(trtype, traddr, target.trsvcid, target.nqn)
        nvme_host.delete_controller(name)
    wait_for(lambda: not nvme_host.controllers(target.nqn),
             f"no controller of {target.nqn} left", timeout=30)
    record_property(DIAG, f"{DELETES} controllers connected and deleted at once")


@pytest.mark.requires("module:nvmet")
def test_subsystem_deleted_without_enabling(make_backing):
    """a subsystem with a namespace that was never enabled is deleted cleanly (blktests nvme/038)"""
    cfs = nvmet.Configfs()
    path = cfs.nvmet / "subsystems" / nvmet.make_nqn("never-enabled")
    namespace = path / "namespaces" / "1"
    cfs.mkdir(path)
    try:
        cfs.mkdir(namespace)
        try:
            cfs.write(namespace / "device_path", make_backing("file", 16 * MiB).path)
            assert cfs.read(namespace / "enable") == "0"
        finally:
            cfs.rmdir(namespace)
    finally:
        cfs.rmdir(path)
    assert not path.exists()


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_persistent_discovery_controller(target, network, nvme_host, trtype, record_property):
    """a discovery controller with a keep-alive timeout over {trtype} stays live across several keep-alives (blktests nvme/003)"""
    traddr = network.topology.traddrs[0]
    name = nvme_host.connect(trtype, traddr, target.trsvcid, nvmet.DISCOVERY_NQN,
                             options={"keep_alive_tmo": KATO_S})
    try:
        # a window of KEEP_ALIVES keep-alive periods: the controller must be live all along
        window = KATO_S * KEEP_ALIVES
        states = samples_over(lambda: nvme_host.controller(name).state, window)
        assert states == {"live"}, f"{name} went through {states} in {window} s"
        log = nvme_host.discovery_log(trtype, traddr, target.trsvcid)[1]
        assert target.nqn in {r.subnqn for r in log}, log
    finally:
        nvme_host.delete_controller(name)
    record_property(DIAG, f"discovery controller {name} live for {window} s with "
                          f"keep_alive_tmo {KATO_S} s")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.requires("tool:fio")
def test_head_survives_losing_every_path(connection, nvme_host, target, trtype, network,
                                         record_property):
    """with delayed_removal_secs the multipath head outlives its only controller over {trtype}, and the reconnected path serves it (blktests nvme/068)"""
    delay = Path("/sys/block") / Path(connection.device).name / "delayed_removal_secs"
    if not delay.exists():
        pytest.skip("missing: delayed_removal_secs on the multipath head (Linux 6.16+)")
    delay.write_text(f"{DELAYED_REMOVAL_S}\n")
    try:
        nvme_host.delete_controller(connection.controllers[0])
        wait_for(lambda: not nvme_host.controllers(connection.nqn),
                 f"{connection.controllers[0]} gone", timeout=30)
        assert Path(connection.device).exists(), f"{connection.device} went with its last path"
        name = nvme_host.connect(trtype, network.topology.traddrs[0], target.trsvcid,
                                 target.nqn)
        wait_for(lambda: nvme_host.controller(name).state == "live", f"{name} live", timeout=30)
        assert nvme_host.namespace_device(connection.nqn) == connection.device
        fio.run(JOB_AFTER, connection.device, network.host.argv())
    finally:
        delay.write_text("0\n")         # the disconnect removes the head at once again
    record_property(DIAG, f"{connection.device} kept with no path (delayed_removal_secs "
                          f"{DELAYED_REMOVAL_S}), served again through {name}")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.requires("tool:fio")
@pytest.mark.nvme_recovery_expected             # the controller loses its target for good
def test_target_gone_for_good_during_io(network, backing_device, nvme_host, trtype,
                                        record_property):
    """the target torn down under fio over {trtype}: fio ends with I/O errors once ctrl_loss_tmo expires, nothing hangs, the controller goes (blktests nvme/061)"""
    options = {"reconnect_delay": 1, "ctrl_loss_tmo": CTRL_LOSS_S}
    target = nvmet.Target(backing_device, trtype, network.topology.traddrs,
                          in_target_netns=network.target.enter)
    with ExitStack() as host_side:
        with target:
            name = nvme_host.connect(trtype, network.topology.traddrs[0], target.trsvcid,
                                     target.nqn, options=options)
            host_side.callback(_disconnect_what_is_left, nvme_host, target.nqn)
            device = nvme_host.namespace_device(target.nqn)
            nvme_host.wait_scanned(target.nqn)
            running = host_side.enter_context(fio.start(JOB_DURING, device,
                                                        network.host.argv()))
            fio.wait_for_io(running, device)
            started = time.monotonic()
        # the target is gone, fio goes on reading
        wait_for(lambda: running.poll() is not None,
                 f"fio on {device} to end after its target went", timeout=CTRL_LOSS_S + 60)
        ended = time.monotonic() - started
        with pytest.raises(fio.FioFailed, match="error"):
            fio.finish(running, JOB_DURING, device, network.host.argv())
        wait_for(lambda: not nvme_host.controllers(target.nqn),
                 f"{name} removed after ctrl_loss_tmo {CTRL_LOSS_S} s", timeout=60)
    record_property(DIAG, f"fio ended {ended:.1f} s after the target went (ctrl_loss_tmo "
                          f"{CTRL_LOSS_S} s), with I/O errors; {name} removed")


def _disconnect_what_is_left(nvme_host, nqn):
    if nvme_host.controllers(nqn):
        nvme_host.disconnect(nqn)


class TestReconnecting:
    """Cases whose controller must reconnect: the host side in the initial netns, where
    NVMe/TCP opens a reconnect's sockets (docs/kernel-findings.md)."""

    @pytest.fixture
    def topo(self, request, paths):
        topo = topology.topology_for_paths(paths, rate=request.config.getoption("rate"))
        return topology.replace(topo, host=topology.replace(topo.host, init_netns=True))

    @pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
    @pytest.mark.nvme_recovery_expected          # nvmet drops its controllers to apply the limit
    def test_queue_count_follows_qid_max(self, network, target, nvme_host, trtype,
                                         record_property):
        """attr_qid_max lowered on the subsystem: the controller reconnects over {trtype} with that many I/O queues (blktests nvme/048)"""
        with nvme_host.connected(trtype, network.topology.traddrs, target.trsvcid, target.nqn,
                                 options=faults.TIMEOUTS) as connection:
            name = connection.controllers[0]
            before = nvme_host.controller(name).queue_count
            if before < 3:
                pytest.skip(f"{name} has {before - 1} I/O queue: nothing to lower")
            nvmet.Configfs().write(target.subsystem.path / "attr_qid_max", "1")
            wait_for(lambda: (c := nvme_host.controller(name)).state == "live"
                     and c.queue_count == 2,
                     f"{name} live again with 1 I/O queue (attr_qid_max 1)", timeout=60)
        record_property(DIAG, f"{name}: {before - 1} I/O queues, 1 after attr_qid_max 1")

    @pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
    @pytest.mark.requires("kconfig:NVME_TARGET_DEBUGFS")
    @pytest.mark.nvme_recovery_expected             # the target fails the controller on purpose
    def test_target_reset_through_debugfs(self, network, target, nvme_host, trtype,
                                          record_property):
        """nvmet's debugfs fails the target's controller 3 times over {trtype}: the host reconnects each time and its namespace reads (blktests nvme/060)"""
        debugfs = Path("/sys/kernel/debug/nvmet") / target.nqn
        with nvme_host.connected(trtype, network.topology.traddrs, target.trsvcid, target.nqn,
                                 options=faults.TIMEOUTS) as connection:
            name = connection.controllers[0]
            # the target's new controller may take the old one's id: the host's log says
            # when it reconnected
            reconnected = re.compile(rf"nvme {name}: Successfully reconnected")
            log, lines = KernelLog(), []
            try:
                for turn in range(RESETS):
                    state = wait_for(lambda: next(debugfs.glob("ctrl*/state"), None),
                                     f"the target's controller of {target.nqn} in {debugfs}",
                                     timeout=30)
                    state.write_text("fatal\n")
                    wait_for(lambda: lines.extend(log.new_lines())
                             or (len([l for l in lines if reconnected.search(l)]) > turn
                                 and nvme_host.controller(name).state == "live"),
                             f"{name} reconnected after target-side reset {turn + 1}",
                             timeout=60)
            finally:
                log.close()
            nvme_host.run_nvme(["read", connection.device, "--block-count=0", "--data-size=512",
                                "--data=/dev/null"])
        record_property(DIAG, f"{RESETS} target-side resets of {name}, each reconnected")
