"""Churn on each transport: 100 connect/disconnect cycles and 20 target port add/remove
cycles leave nothing behind. Controllers, nvmet ports and subsystems, and the sockets
of both namespaces (every state but TIME_WAIT) return to what they were before, and on
a kernel booted with kmemleak=on a kmemleak scan after the cycles finds nothing.

kmemleak is on only where the kernel has CONFIG_DEBUG_KMEMLEAK and was booted with
kmemleak=on (the test kernel has it built in and off: ``--append kmemleak=on``); each
case says in its diagnostics whether it checked, and the per-test kernel check scans
again at teardown.
"""

import os
from pathlib import Path

import pytest

from mptcp_nvme.guest import DIAG, health, sock_diag, target as nvmet, wait_for

CONNECT_CYCLES = 100
PORT_CYCLES = 20
SETTLE = 30.0        # closing sockets (FIN_WAIT, LAST_ACK) may take a moment


def snapshot(network):
    """What churn must not leave behind, as comparable values."""
    nvmet_dir = nvmet.Configfs().nvmet
    state = {
        "controllers": sorted(os.listdir("/sys/class/nvme")) if os.path.isdir("/sys/class/nvme") else [],
        "nvmet ports": sorted(p.name for p in (nvmet_dir / "ports").iterdir()),
        "nvmet subsystems": sorted(p.name for p in (nvmet_dir / "subsystems").iterdir()),
    }
    for side, netns in (("target", network.target), ("host", network.host)):
        with netns.enter():
            found = sock_diag.sockets(sock_diag.LIVE_STATES)
        state[f"{side} sockets"] = sorted(f"{s.protocol} {s.local}:{s.lport}>{s.remote}:{s.rport}"
                                          for s in found)
    return state


def assert_back_to(baseline, network, what):
    """Poll until snapshot() equals ``baseline``; name what differs when it does not."""
    def same():
        return snapshot(network) == baseline
    try:
        wait_for(same, f"{what}: controllers, ports and sockets back to the baseline",
                 timeout=SETTLE, interval=0.5)
    except Exception:
        now = snapshot(network)
        diff = {key: {"before": baseline[key], "after": now[key]}
                for key in baseline if now[key] != baseline[key]}
        raise AssertionError(f"{what} left behind: {diff}") from None


@pytest.fixture
def kmemleak(record_property):
    """health.Kmemleak, cleared at the start; the test calls check() after its cycles."""
    leaks = health.Kmemleak()

    def check():
        if not leaks.available:
            record_property(DIAG, f"kmemleak: not checked ({leaks.why_not})")
            return
        report = leaks.new_leaks()
        assert not report, f"kmemleak after the cycles:\n{report[:4000]}"
        record_property(DIAG, "kmemleak: no leaks after the cycles")
    return check


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_churn_connect_disconnect(trtype, network, target, nvme_host, kmemleak,
                                  record_property):
    """churn: connect and disconnect over {trtype} 100 times, nothing left behind"""
    traddr = network.topology.traddrs[0]
    baseline = snapshot(network)
    names = set()
    for cycle in range(CONNECT_CYCLES):
        # straight through /dev/nvme-fabrics and sysfs: the kernel's work, not nvme-cli's
        # start-up, makes the cycle (nvme connect runs in every other selftest)
        name = nvme_host.connect_from(network.host, trtype, traddr, target.trsvcid, target.nqn)
        state = nvme_host.controller(name).state
        assert state in ("live", "connecting"), f"cycle {cycle}: {name} is {state}"
        names.add(name)
        nvme_host.wait_scanned(target.nqn)     # connected means usable: the scan is done
        nvme_host.disconnect(target.nqn, nvme_cli=False)
    assert_back_to(baseline, network, f"{CONNECT_CYCLES} connect/disconnect cycles")
    record_property(DIAG, f"{CONNECT_CYCLES} cycles over {trtype} to {traddr}: controller names "
                          f"{len(names)} distinct; controllers, nvmet and sockets at baseline")
    kmemleak()


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_churn_port_add_remove(trtype, network, target, nvme_host, kmemleak, record_property):
    """churn: add a port, discover through it and remove it over {trtype} 20 times, nothing left behind"""
    configfs = nvmet.Configfs()
    link = network.topology.links[0]
    baseline = snapshot(network)
    for cycle in range(PORT_CYCLES):
        port_id, = nvmet.pick_port_ids(1, taken={int(p) for p in baseline["nvmet ports"]})
        trsvcid = nvmet.pick_trsvcid()
        with nvmet.Port(configfs, port_id, trtype, link.traddr, trsvcid,
                        adrfam=link.adrfam) as port:
            port.link(target.subsystem, network.target.enter)
            records = nvme_host.discover(trtype, link.traddr, trsvcid)
            assert [r.portid for r in records if r.subnqn == target.nqn] == [port_id], (
                f"cycle {cycle}: discovery through port {port_id}: {records}")
        assert not Path(port.path).exists()
    assert_back_to(baseline, network, f"{PORT_CYCLES} port add/remove cycles")
    record_property(DIAG, f"{PORT_CYCLES} ports added, discovered through and removed over "
                          f"{trtype}; nvmet and sockets at baseline")
    kmemleak()
