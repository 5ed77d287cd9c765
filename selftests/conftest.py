"""Fixtures of the in-guest selftests: topology, nvmet target, NVMe host, connection.

Requirements and kernel health checks come from mptcp_nvme.guest (enabled here too, so
that a plain ``sudo pytest selftests`` applies them). Parameters: ``trtype``, ``paths``,
``iopolicy`` and ``loss`` take their values from the command line (``--trtype``,
``--paths``, ``--iopolicy``, ``--loss``) or else from the test's ``matrix`` marker.
"""

import inspect
from contextlib import ExitStack, nullcontext

import pytest

from mptcp_nvme.guest import (
    BACKINGS, BOND_MODES, DIAG, DM_SELECTORS, SUITE_HOSTNQN, backing as stores, dm_mpath,
    enable_selftest_checks, initiator, mptcp_counter_findings, nvme_multipath, require,
    results_dir, target as nvmet, Tlshd, TlsKeys, topology)

# pool (builder) and proof are imported in the functions that use them: they import
# pyroute2, which takes as long as pytest itself under TCG (~1.8 s of a cold start), and
# a run whose tests build no network should not wait for it before its first result.

# What proving a controller's transport from its sockets needs (guest/net/proof.py).
EVIDENCE_NEEDS = {"tcp": ("kconfig:INET_DIAG",),
                  "mptcp": ("kconfig:INET_DIAG", "kconfig:INET_MPTCP_DIAG")}
PROBLEMS = pytest.StashKey[list]()
NETWORKS = pytest.StashKey[list]()


def pytest_configure(config):
    enable_selftest_checks(config)
    config.addinivalue_line("markers", "matrix(**values): default parameter values, e.g. "
                            "matrix(trtype=('tcp', 'mptcp'), paths=(1, 4))")
    config.addinivalue_line("markers", "mptcp_fallback_expected: MPTcpExt fallback counters "
                            "do not fail this test")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After the test: the MPTcpExt counters of each of its namespaces go into its
    diagnostics, and a fallback or checksum error fails it, as does a queue-socket
    proof (prove_transport) that did not hold. A network handed on from an earlier test
    is counted from when this test got it."""
    problems = item.stash.setdefault(PROBLEMS, [])    # prove_transport may have added
    try:
        return (yield)
    finally:
        fallback_expected = bool(item.get_closest_marker("mptcp_fallback_expected"))
        for handout in item.stash.get(NETWORKS, []):
            shown, found = mptcp_counter_findings(handout.network, fallback_expected,
                                                  handout.counters)
            item.user_properties += [(DIAG, line) for line in shown]
            problems += found
        if problems:
            raise AssertionError("MPTCP evidence: " + "; ".join(problems))


def pytest_generate_tests(metafunc):
    """Parametrize trtype/paths/iopolicy/loss: command line first, then the marker."""
    marker = metafunc.definition.get_closest_marker("matrix")
    defaults = marker.kwargs if marker else {}
    chosen = {
        "trtype": metafunc.config.getoption("trtype"),
        "paths": metafunc.config.getoption("paths"),
        "iopolicy": metafunc.config.getoption("iopolicy"),
        "loss": [bool(v) for v in metafunc.config.getoption("loss") or ()] or None,
    }
    topology_file = metafunc.config.getoption("topology")
    if topology_file:
        # The file's links say how many paths and whether loss applies, whatever --loss.
        links = topology.load_topology(topology_file).links
        chosen["paths"] = [len(links)]
        chosen["loss"] = [any(link.netem.loss_pct or link.netem.delay_us for link in links)]
    if "backing" in inspect.signature(metafunc.function).parameters:
        # the backing cases take each kind; every other test the first (backing fixture)
        metafunc.parametrize("backing", metafunc.config.getoption("backing") or BACKINGS,
                             indirect=True)
    paired = "multipath" in metafunc.fixturenames      # iopolicy comes with multipath
    if paired:
        _parametrize_multipath(metafunc, chosen["iopolicy"] or defaults.get("iopolicy"), defaults)
    for name in ("trtype", "paths", "iopolicy", "loss"):
        if name in metafunc.fixturenames and not (paired and name == "iopolicy"):
            values = chosen[name] or defaults.get(name) or {"loss": (False,)}.get(name)
            if values is None:
                raise pytest.UsageError(f"{metafunc.function.__name__}: no values for {name}")
            ids = [f"loss{int(v)}" if name == "loss" else f"{v}path" if name == "paths"
                   else str(v) for v in values]
            metafunc.parametrize(name, values, ids=ids, indirect=name in ("trtype", "iopolicy"))


def _parametrize_multipath(metafunc, iopolicies, defaults):
    """(multipath, iopolicy) pairs: native with each iopolicy, dm with each dm path
    selector, bond with each bonding mode (in the ``iopolicy`` parameter):
    --multipath/--dm-selector/--bond-mode, else the marker's."""
    config = metafunc.config
    modes = config.getoption("multipath") or defaults.get("multipath") or ("native",)
    selectors = config.getoption("dm_selector") or defaults.get("dm_selector") or DM_SELECTORS
    bonds = config.getoption("bond_mode") or defaults.get("bond_mode") or BOND_MODES
    pairs = [("native", p) for p in iopolicies or ("numa",) if "native" in modes]
    pairs += [("dm", s) for s in selectors if "dm" in modes]
    pairs += [("bond", b) for b in bonds if "bond" in modes]
    metafunc.parametrize("multipath,iopolicy", pairs, indirect=True,
                         ids=[p if m == "native" else f"{m}-{p}" for m, p in pairs])


@pytest.fixture
def trtype(request):
    require(request.config, *nvmet.REQUIREMENTS, *initiator.REQUIREMENTS, f"trtype:{request.param}",
            *EVIDENCE_NEEDS[request.param])
    return request.param


@pytest.fixture
def prove_transport(request, network, trtype):
    """prove(host, nqn): the kernel's sockets under every controller of ``nqn`` are
    ``trtype`` (mptcp: no fallback, subflows from every host link with an MPTCP
    endpoint); their description goes into the test's diagnostics, a mismatch fails it
    (after the test body, so its own results still show)."""
    from mptcp_nvme.guest import proof
    links = network.topology.links if network.topology.host.endpoint_flags else ()

    def prove(nvme_host, nqn):
        try:
            ctrls = proof.prove_queues(network.host, nvme_host, nqn, trtype, links,
                                       topology=network.topology)
        except proof.TransportProofFailed as err:
            request.node.stash.setdefault(PROBLEMS, []).append(str(err))
            ctrls = []
        for ctrl in ctrls:
            request.node.user_properties.append((DIAG, proof.describe(ctrl, network.topology.links)))
        prove.proven[nqn] = ctrls
        return ctrls
    prove.proven = {}
    return prove


@pytest.fixture
def multipath(request):
    """"native", "dm" or "bond": native NVMe multipath on or off (nvme_core reloaded) for
    the test; dm needs dmsetup and dm-multipath; bond, the bonding module (its one path
    takes native multipath as it is)."""
    if request.param == "bond":
        require(request.config, "module:bonding")
        yield request.param
        return
    if request.param == "dm":
        require(request.config, *dm_mpath.REQUIREMENTS)
    with nvme_multipath.multipath_mode(native=request.param == "native"):
        yield request.param


@pytest.fixture
def iopolicy(request):
    """The native iopolicy, or with ``multipath`` dm the dm path selector, with bond the
    bonding mode."""
    params = getattr(request.node, "callspec", None)
    mode = params and params.params.get("multipath")
    if mode == "dm":
        require(request.config, *dm_mpath.selector_requirements(request.param))
    elif mode == "bond":
        pass                    # every mode of the bonding module (the multipath fixture)
    else:
        require(request.config, f"iopolicy:{request.param}")
    return request.param


@pytest.fixture
def multipath_device(multipath, iopolicy):
    """open(nvme_host, connection): a context manager giving the device to do I/O on:
    the native head, or (``multipath`` dm) a dm-multipath device over every path with
    the selector ``iopolicy``, removed on exit (before the disconnect: open it inside
    the ``connected`` block)."""
    def open_device(nvme_host, connection):
        if multipath != "dm":
            return nullcontext(connection.device)
        paths = nvme_host.path_devices(connection.nqn)
        return dm_mpath.opened(f"mptcp-nvme-{connection.controllers[0]}", paths, iopolicy)
    return open_device


@pytest.fixture
def topo(request, paths, loss):
    """The topology under test: --topology FILE, else the script's for ``paths`` (at
    --rate, its loss profile scaled to it)."""
    topology_file = request.config.getoption("topology")
    if topology_file:
        return topology.load_topology(topology_file)
    return topology.topology_for_paths(paths, loss=loss, rate=request.config.getoption("rate"),
                                       loss_links=_loss_links(request.config, paths))


def _loss_links(config, paths):
    """--loss-links, at most every link of a topology with fewer."""
    chosen = config.getoption("loss_links")
    return min(chosen, paths) if chosen else None


@pytest.fixture(scope="session")
def network_pool():
    """The VM's networks, each built once and handed to every later test that asks for
    its topology while it is as built and quiet (guest/net/pool.py)."""
    from mptcp_nvme.guest import pool
    with pool.NetworkPool() as networks:
        yield networks


@pytest.fixture
def make_network(request, network_pool):
    """build(topo): a network of ``topo`` for the test, from the pool (built for it, or
    handed on from an earlier test); the MPTcpExt counters of every network
    used here are checked after the test, counted from when the test got it."""
    held = []

    def build(topo):
        require(request.config, *topology.REQUIREMENTS, *topology.requirements(topo))
        handout = network_pool.acquire(topo)
        held.append(handout.network)
        request.node.stash.setdefault(NETWORKS, []).append(handout)
        request.node.user_properties.append((DIAG, describe_handout(handout)))
        return handout.network
    try:
        yield build
    finally:
        for network in reversed(held):
            network_pool.release(network)


def describe_handout(handout):
    links = len(handout.network.topology.links)
    if handout.handed_on:
        return f"network: {links} link(s), handed on from an earlier test"
    because = f" (the kept one was not handed on: {handout.fresh_because})" \
        if handout.fresh_because else ""
    return f"network: {links} link(s), built for this test{because}"


@pytest.fixture
def network(make_network, topo):
    return make_network(topo)


@pytest.fixture
def backing(request):
    """The kind of backing store: the test's own parameter (a backing case), else the
    first --backing, else mptcp_nvme.sh's loop device."""
    kind = getattr(request, "param", None) or (request.config.getoption("backing") or BACKINGS)[0]
    require(request.config, *stores.REQUIREMENTS[kind])
    return kind


@pytest.fixture
def make_backing():
    """store(kind, size=512 MiB): a backing store (backing.py), removed after the test."""
    with ExitStack() as made:
        yield lambda kind, size=stores.SIZE: made.enter_context(stores.store(kind, size))


@pytest.fixture
def backing_device(backing, make_backing):
    """Namespace 1's backing store (512 MiB, as the script's file)."""
    return make_backing(backing).path


@pytest.fixture
def make_target(network, backing_device, trtype):
    """Factory: an nvmet target on every path of ``network`` (listeners in its target
    netns), or on ``addresses``; options as nvmet.Target (tls, treq, ...). Torn down
    after the test."""
    with ExitStack() as targets:
        def make(addresses=None, **options):
            target = nvmet.Target(backing_device, trtype, addresses or network.topology.traddrs,
                                  in_target_netns=network.target.enter,
                                  **options)
            return targets.enter_context(target)
        yield make


@pytest.fixture
def target(make_target):
    return make_target()


@pytest.fixture
def nvme_host(network):
    return initiator.NvmeHost(prefix=network.host.argv())


@pytest.fixture
def subsysnqn(trtype):
    return nvmet.make_nqn(trtype)


@pytest.fixture
def psks(subsysnqn):
    """PSKs for SUITE_HOSTNQN with the subsystem and with the discovery subsystem."""
    with TlsKeys(SUITE_HOSTNQN, [subsysnqn, nvmet.DISCOVERY_NQN]) as keys:
        yield keys


@pytest.fixture
def tlshd(request, network):
    """tlshd in the target's and in the host's namespace: {"target": Tlshd, "host": Tlshd}."""
    logs = results_dir(request.config) / "tlshd"
    with ExitStack() as daemons:
        yield {role: daemons.enter_context(Tlshd(netns, logs / f"{request.node.name}-{role}.log"))
               for role, netns in (("target", network.target), ("host", network.host))}


@pytest.fixture
def treq():
    """treq of the TLS ports; a test parametrizes it to change it."""
    return "required"


@pytest.fixture
def tls_transport(request, trtype):
    """SKIP before anything is set up when nvmet refuses TLS ports of ``trtype``."""
    require(request.config, f"tls:{trtype}")
    return trtype


@pytest.fixture
def tls_target(tls_transport, psks, tlshd, make_target, subsysnqn, treq):
    """The subsystem on every path, ports with addr_tsas=tls1.3."""
    return make_target(nqn=subsysnqn, tls=True, treq=treq)


@pytest.fixture
def tls_host(network):
    return initiator.NvmeHost(prefix=network.host.argv(), hostnqn=SUITE_HOSTNQN)


@pytest.fixture
def connection(nvme_host, target, network, prove_transport):
    """One controller per path to ``target``, its queue sockets proven to be of the
    target's trtype; always disconnected afterwards."""
    with nvme_host.connected(target.trtype, network.topology.traddrs, target.trsvcid,
                             target.nqn) as conn:
        prove_transport(nvme_host, conn.nqn)
        yield conn
