"""Requirements, kernel-log checks and the guest command line, without a VM."""

import os
import sys
from pathlib import Path

import pytest

from mptcp_nvme.guest.checks import health, requirements

from mptcp_nvme.host.vm import guest_session as remote
from mptcp_nvme.guest.checks.requirements import Features
from tests import REPO



@pytest.fixture
def features():
    return Features(
        release="7.3.4", kconfig={"NVME_TCP": "m", "NVME_TCP_TLS": "y", "MPTCP": "n"},
        modules={"nvmet": True}, configfs=True,
        trtypes={"tcp": None, "mptcp": "nvmet rejects addr_trtype=mptcp (EINVAL)"},
        tls_trtypes={"tcp": None, "mptcp": "NVMe transport mptcp missing"},
        iopolicies=("numa", "round-robin"), fabrics_options=("transport", "tls"),
        tools={"nvme": "/usr/sbin/nvme", "tlshd": None})


@pytest.mark.parametrize("requirement, reason", [
    ("kconfig:NVME_TCP", None),
    ("kconfig:NVME_TCP_TLS", None),
    ("kconfig:MPTCP", "CONFIG_MPTCP not set"),
    ("kconfig:VETH", "CONFIG_VETH not set"),
    ("trtype:tcp", None),
    ("trtype:mptcp", "NVMe transport mptcp: nvmet rejects addr_trtype=mptcp (EINVAL)"),
    ("iopolicy:round-robin", None),
    ("iopolicy:queue-depth", "iopolicy queue-depth not offered by nvme_core"),
    ("feature:tls", None),
    ("tls:tcp", None),
    ("tls:mptcp", "TLS over mptcp: NVMe transport mptcp missing"),
    ("tool:nvme", None),
    ("tool:definitely-not-installed", "tool definitely-not-installed not installed"),
])
def test_requirements(features, requirement, reason):
    assert features.unmet(requirement) == reason


def test_unknown_requirement_kind_is_a_bug_in_the_test(features):
    with pytest.raises(ValueError, match="unknown requirement 'colour:blue'"):
        features.unmet("colour:blue")


def test_summary_names_refused_transports(features):
    summary = features.summary()
    assert "nvmet trtypes tcp (nvmet rejects addr_trtype=mptcp (EINVAL))" in summary
    assert "tls tcp;" in summary
    assert "missing tools tlshd" in summary


def test_summary_names_tls_refused_on_a_transport_the_kernel_has(features):
    features.trtypes["mptcp"] = None
    features.tls_trtypes["mptcp"] = ("nvmet rejects addr_tsas=tls1.3 on a mptcp port (EINVAL): "
                                     + requirements.TLS_REFUSAL_HINTS["mptcp"])
    assert features.unmet("tls:mptcp").startswith("TLS over mptcp: nvmet rejects addr_tsas")
    assert "MPTCP kTLS" in features.summary()


def test_problem_patterns():
    lines = ["[ 1.0] nvme nvme0: starting error recovery", "[ 1.1] all good",
             "[ 2.0] WARNING: CPU: 0 PID: 1 at net/mptcp/protocol.c:42",
             "[ 3.0] BUG: KASAN: slab-use-after-free in nvmet_tcp_io_work",
             "[ 4.0] rcu: INFO: rcu_preempt self-detected stall on CPU"]
    assert health.problems(lines) == [lines[0], lines[2], lines[3], lines[4]]


def test_keep_alive_aborted_by_a_disconnect_is_not_a_problem():
    lines = ["[102.19] nvme nvme1: Removing ctrl: NQN \"nqn.x\"",
             "[102.26] nvme nvme1: long keepalive RTT (4294774608 ms)",
             "[102.27] nvme nvme1: failed nvme_keep_alive_end_io error=4",
             "[103.00] nvme nvme2: failed nvme_keep_alive_end_io error=4"]
    assert health.problems(lines) == [lines[3]]     # nvme2 was not being removed


def test_expected_lines_are_not_problems_and_nothing_else_is_excused():
    """kernel_log_expected: a test deleting controllers under the partition scan (from
    selftests/test_target_changes.py's first run on 7.3.4)."""
    lines = ["[   76.755056] Buffer I/O error on dev nvme0n1, logical block 3, async page read",
             "[   77.000000] WARNING: CPU: 1 PID: 9 at block/genhd.c:1 del_gendisk",
             "[   78.000000] Buffer I/O error on dev nvme0n1, logical block 3, lost async page write"]
    expected = [r"Buffer I/O error on dev nvme\d+n\d+, logical block \d+, async page read"]
    assert health.problems(lines) == lines
    assert health.problems(lines, expected=expected) == lines[1:]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/kmsg"),
                    reason="writing /dev/kmsg needs root")
def test_kernel_log_cursor_sees_only_new_lines():
    log = health.KernelLog()
    try:
        Path("/dev/kmsg").write_text("mptcp-nvme unit test: WARNING: synthetic\n")
        lines = log.new_lines()
        assert any("mptcp-nvme unit test: WARNING: synthetic" in line for line in lines)
        assert health.problems(lines)
        assert log.new_lines() == []
    finally:
        log.close()


def test_guest_paths_map_into_the_shared_source_tree():
    assert remote.guest_path(REPO / "selftests") == "/mnt/src/selftests"
    assert (remote.guest_path(f"{REPO}/selftests/test_modules.py::test_x[tcp]")
            == "/mnt/src/selftests/test_modules.py::test_x[tcp]")
    with pytest.raises(ValueError, match="must live inside"):
        remote.guest_path("/etc/passwd")


def test_on_the_host_root_the_guest_uses_host_paths_and_this_venv(tmp_path):
    layout = remote.GuestLayout.on_host_root(tmp_path)
    command = remote.guest_command([REPO / "selftests"], (), layout)
    assert command.startswith(f"cd {REPO} && PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "
                              f"exec {sys.executable} -P {REPO}/mptcp_nvme/guest/launch.py")
    assert f"--results-dir {tmp_path}" in command
    assert command.endswith(f"{REPO}/selftests 3<&0 4>&1 1>&2")


def test_guest_command_keeps_the_channel_off_pytest_capture():
    command = remote.guest_command([REPO / "selftests"],
                                   ["--guest-config", "/mnt/results/guest-config.json"])
    assert command.startswith("cd /mnt/src && PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "
                              "exec python3 -P /mnt/src/mptcp_nvme/guest/launch.py")
    assert "--guest-config /mnt/results/guest-config.json" in command
    assert command.endswith("/mnt/src/selftests 3<&0 4>&1 1>&2")


def test_the_guest_gets_test_files_not_node_ids():
    """The command travels on the kernel command line: 60 node ids overflowed it."""
    nodeids = [f"{REPO}/selftests/bench/bench_matrix.py::test_cell[r{r}-tcp-4path-numa-loss0]"
               for r in range(60)] + [f"{REPO}/selftests/test_modules.py::test_x"]
    command = remote.guest_command(nodeids)
    assert command.count("/mnt/src/selftests/bench/bench_matrix.py") == 1 and "::" not in command
    assert "/mnt/src/selftests/test_modules.py" in command and len(command) < 400


def test_the_files_can_travel_in_a_file_of_the_shared_results_folder(tmp_path):
    """17 selftest files on the command line panicked Debian's 7.3.4 in early boot."""
    files = [REPO / "selftests" / f"test_{n:02}.py" for n in range(40)]
    command = remote.guest_command(files, (), args_file=(tmp_path / "args.txt",
                                                         "/mnt/results/args.txt"))
    assert command.endswith("@/mnt/results/args.txt 3<&0 4>&1 1>&2") and len(command) < 300
    assert (tmp_path / "args.txt").read_text().splitlines() == [
        f"/mnt/src/selftests/test_{n:02}.py" for n in range(40)]


def test_a_built_in_module_without_sysfs_entry_counts_as_loaded(tmp_path):
    (tmp_path / "modules.builtin").write_text("kernel/net/x/mptcp_nvme_fake.ko\n")
    assert requirements.load_module("mptcp-nvme-fake", modules_dir=tmp_path)
    assert not requirements.load_module("mptcp-nvme-absent", modules_dir=tmp_path)


def test_mptcp_counters_of_both_namespaces_are_diagnostics_and_fallbacks_problems(monkeypatch):
    import contextlib
    from types import SimpleNamespace

    from mptcp_nvme.guest.checks import gates
    from mptcp_nvme.guest.net import netstat

    entered = []

    def side(name):
        @contextlib.contextmanager
        def enter():
            entered.append(name)
            yield
        return SimpleNamespace(enter=enter)

    counters = {"target": {"MPCapableSYNRX": 3, "MPJoinSynRx": 6, "Unrelated": 0},
                "host": {"MPCapableSYNTX": 3, "MPCapableFallbackACK": 1}}
    monkeypatch.setattr(netstat, "mptcp_counters", lambda: counters[entered[-1]])
    network = SimpleNamespace(target=side("target"), host=side("host"))
    shown, problems = gates.mptcp_counter_findings(network)
    assert shown == ["MPTcpExt target: MPCapableSYNRX=3 MPJoinSynRx=6",
                     "MPTcpExt host: MPCapableFallbackACK=1 MPCapableSYNTX=3"]
    assert problems == ["host: MPTcpExt MPCapableFallbackACK +1"]
    assert gates.mptcp_counter_findings(network, fallback_expected=True)[1] == []
    # a network handed on from an earlier test: only what changed since counts
    earlier = {"target": {"MPCapableSYNRX": 3, "MPJoinSynRx": 6},
               "host": {"MPCapableSYNTX": 2, "MPCapableFallbackACK": 1}}
    assert gates.mptcp_counter_findings(network, before=earlier) == (
        ["MPTcpExt host: MPCapableSYNTX=1"], [])


def test_broken_link_limited_claims_fail_where_the_links_limited_or_cannot_say():
    from mptcp_nvme import topology
    from mptcp_nvme.guest.checks.gates import judge_link_limited
    links = topology.topology_for_paths(2, rate="50mbit").links
    judge_link_limited([], links, 1e6)                    # nothing broken: nothing judged
    with pytest.raises(pytest.fail.Exception, match=r"path2 short \(95 of the 100 Mbit/s"):
        judge_link_limited(["path2 short"], links, 95e6)
    with pytest.raises(pytest.skip.Exception,
                       match=r"the guest did: 40 of the 100 Mbit/s.*not judged: path2 short"):
        judge_link_limited(["path2 short"], links, 40e6)
    with pytest.raises(pytest.fail.Exception, match="a link is unshaped"):
        judge_link_limited(["path2 short"], [topology.replace(links[0], netem=topology.Netem())],
                           1e6)
