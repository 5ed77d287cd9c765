"""Faults during I/O: a link, a subflow's endpoint, a port or a controller fails while fio
writes with crc32c verification, and comes back (guest/faults.py says what each does).

NVMe/TCP runs one controller per link with the round-robin iopolicy (NVMe multipath
fails over); NVMe over MPTCP runs one controller whose queues have subflows on every link
(MPTCP fails over), two for the ``delete`` fault. Every case must end with no verify
error, no I/O error (a path, or a controller reconnecting within ctrl_loss_tmo, always
remains) and the bandwidth back; the stall and the recovery time are reported (the
FAULT property: faults.md, faults.json and a timeline per case on the host), not
asserted, except a stall long enough to be a hang.

The bond cases put one NVMe/TCP controller on a Linux bond of the links (one case per
bonding mode) under the faults that hit one link: the same table then shows what the
bond's link monitoring makes of a link down or a black hole, beside NVMe multipath's
and MPTCP's recovery from the same fault.
"""


import pytest

from mptcp_nvme.guest import BOND_MODES, DIAG, faults, quick, results_dir, topology

FAULT_LINKS = 2
FAULT_RATE = "30mbit"       # the links, not TCG, bound the bandwidth: recovery shows
BOND_FAULTS = ("link-down", "blackhole")    # the faults that hit one of the bond's links


def pytest_generate_tests(metafunc):
    if "fault" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("fault") or list(faults.INJECTORS)
        bonded = "bond_mode" in metafunc.fixturenames
        metafunc.parametrize("fault", [name for name in chosen
                                       if not bonded or name in BOND_FAULTS])
        if bonded:
            metafunc.parametrize("bond_mode",
                                 metafunc.config.getoption("bond_mode") or BOND_MODES)


@pytest.fixture
def topo(request):
    """The script's links, FAULT_LINKS of them, at --rate (else FAULT_RATE), no loss; the
    host side in the initial netns, where NVMe/TCP opens a reconnect's sockets. Bonded
    on each side in the case's bonding mode when it has one."""
    topo = topology.topology_for_paths(FAULT_LINKS,
                                       rate=request.config.getoption("rate") or FAULT_RATE)
    topo = topology.replace(topo, host=topology.replace(topo.host, init_netns=True))
    if "bond_mode" in request.fixturenames:
        topo = topology.bonded(topo, request.getfixturevalue("bond_mode"))
    return topo


@pytest.mark.matrix(trtype=("tcp", "mptcp"))
@pytest.mark.nvme_recovery_expected
@pytest.mark.requires("tool:fio")
def test_fault(request, fault, trtype, network, make_target, nvme_host, prove_transport,
               record_property):
    """fault {fault} during verified writes over {trtype}"""
    injected = faults.INJECTORS[fault]()
    count = max(1 if trtype == "mptcp" else len(network.topology.links), injected.controllers)
    run_fault(request, injected, trtype, network, make_target, nvme_host, prove_transport,
              record_property, network.topology.traddrs[:count], f"{fault}-{trtype}")


@pytest.fixture
def over_tcp(trtype):
    """The bond cases weigh bonding against NVMe multipath and MPTCP: NVMe/TCP on the
    bond only (asked before the network is built)."""
    if trtype != "tcp":
        pytest.skip(f"bond faults: NVMe/TCP on the bond only, not {trtype} "
                    "(bonding is the alternative to NVMe multipath and MPTCP)")


@pytest.mark.matrix(trtype=("tcp",))
@pytest.mark.nvme_recovery_expected
@pytest.mark.requires("module:bonding", "tool:fio")
def test_bond_fault(request, fault, bond_mode, trtype, over_tcp, network, make_target,
                    nvme_host, prove_transport, record_property):
    """fault {fault} during verified writes over {trtype} on a bond ({bond_mode}) of the links"""
    run_fault(request, faults.INJECTORS[fault](), trtype, network, make_target, nvme_host,
              prove_transport, record_property, network.topology.traddrs,
              f"{fault}-{trtype}-bond-{bond_mode}")


def run_fault(request, injected, trtype, network, make_target, nvme_host, prove_transport,
              record_property, traddrs, case):
    """``injected`` during verified writes over controllers to ``traddrs``; its outcome
    recorded (FAULT property, diagnostics) and judged."""
    if reason := injected.unmet(faults.Scene(network, nvme_host, None, trtype, traddrs)):
        pytest.skip(f"{injected.name} over {trtype}: {reason}")
    target = make_target(addresses=traddrs)
    # NVMe/TCP paths are bound to their links: unbound, a controller that reconnects while
    # its link is down goes out of another link (routing picks it), and stays there after
    # the heal, one path less for the rest of the run. MPTCP subflows pick their links; a
    # bond's one address picks its slaves.
    ifaces = ({link.traddr: link.host_ifname for link in network.topology.links}
              if trtype == "tcp" and not network.topology.bond else {})

    def reconnect(traddr):
        return nvme_host.connect(trtype, traddr, target.trsvcid, target.nqn,
                                 host_iface=ifaces.get(traddr), options=faults.TIMEOUTS)
    logs = results_dir(request.config) / "faults"
    logs.mkdir(exist_ok=True)
    with nvme_host.connected(trtype, traddrs, target.trsvcid, target.nqn, host_iface=ifaces,
                             options=faults.TIMEOUTS) as connection:
        prove_transport(nvme_host, target.nqn)
        if len(traddrs) > 1:
            nvme_host.set_iopolicy(target.nqn, "round-robin")
        scene = faults.Scene(network, nvme_host, target, trtype, list(connection.controllers),
                             reconnect)
        outcome = faults.inject(injected, scene, connection.device, str(logs / case),
                                prefix=network.host.argv(),
                                phase_s=lambda length: quick.seconds(request.config, length))
    for line in faults.describe(outcome):
        record_property(DIAG, line)
    record_property(*outcome.to_property())
    assert not outcome.verify_error, f"verify errors: {outcome.verify_error}"
    assert not outcome.io_error, f"I/O errors while a path remained: {outcome.io_error}"
    assert not outcome.problem, outcome.problem
