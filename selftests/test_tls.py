"""NVMe/TCP TLS 1.3, as mptcp_nvme.sh's tls mode and blktests nvme/062 check it.

tlshd runs in the target's and the host's namespace, and PSKs for a fixed host NQN and
the subsystem (and the discovery subsystem) sit in the .nvme keyring. tlshd logs are
kept under the results directory, in tlshd/.
"""

import re

import pytest

from mptcp_nvme.guest import (
    TLS_NEEDS, fio, NewKeyring, psk_description, quick, SetupError, tcp_sockets_to, tls_stat,
    TlsKeys)

SHORT_FIO = fio.FioJob(runtime=3)

pytestmark = pytest.mark.requires(*TLS_NEEDS)


@pytest.fixture
def disconnects(tls_host, tls_target):
    """Disconnects whatever a test that expects a refusal connected all the same."""
    yield
    if tls_host.controllers(tls_target.nqn):
        tls_host.disconnect(tls_target.nqn)


def connected(host, target, network, **options):
    """One controller per path of ``network`` to ``target``, disconnected on exit."""
    return host.connected(target.trtype, network.topology.traddrs, target.trsvcid, target.nqn,
                          **options)


def ktls_counters(netns):
    """(TX, RX) kTLS software contexts open in ``netns`` and its decryption errors."""
    stat = tls_stat(netns)
    return (stat["TlsCurrTxSw"], stat["TlsCurrRxSw"]), stat["TlsDecryptError"]


def assert_psk_in_use(host, connection, psks):
    """Every controller of ``connection`` uses the PSK made for its subsystem."""
    keys = {name: host.controller(name).tls_key for name in connection.controllers}
    expected = f"{psks.serials[connection.nqn]:08x}"
    assert set(keys.values()) == {expected}, f"tls_key per controller {keys}, PSK {expected}"


def assert_ktls_carried(before, after, results):
    """The host's sockets to the target (``before`` and ``after`` fio) are kTLS ones
    and they moved at least the bytes fio read and wrote."""
    assert [(s.local, s.peer) for s in after] == [(s.local, s.peer) for s in before], (
        f"sockets changed during fio: {before} -> {after}")
    assert after and all(s.ulp == "tls" for s in after), f"not all kTLS: {after}"
    received = sum(s.bytes_received for s in after) - sum(s.bytes_received for s in before)
    sent = sum(s.bytes_sent for s in after) - sum(s.bytes_sent for s in before)
    assert received >= results["randread"].read.io_bytes, (received, results["randread"])
    assert sent >= results["randwrite"].write.io_bytes, (sent, results["randwrite"])


@pytest.mark.matrix(trtype=("tcp",), paths=(1,))
def test_tls_discovery(tls_host, tls_target, network):
    """nvme discover --tls lists the subsystem with treq required"""
    records = tls_host.discover(tls_target.trtype, network.topology.links[0].traddr,
                                tls_target.trsvcid, tls=True)
    listed = [record for record in records if record.subnqn == tls_target.nqn]
    assert listed, f"{tls_target.nqn} not in {records}"
    assert listed[0].treq.split(",")[0] == "required", listed[0]


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.requires("tool:fio", "tool:ss")
def test_tls_connect_and_fio(request, tls_host, tls_target, network, psks):
    """connect --tls over {trtype}: the PSK is in use and kTLS sockets carry fio"""
    sides = {"host": network.host, "target": network.target}
    before = {side: ktls_counters(netns) for side, netns in sides.items()}
    with connected(tls_host, tls_target, network, tls=True) as conn:
        assert_psk_in_use(tls_host, conn, psks)
        opened = {side: ktls_counters(netns) for side, netns in sides.items()}
        sockets = tcp_sockets_to(network.host, tls_target.trsvcid)
        results = fio.run_script_sequence(conn.device, quick.fio_job(request.config, SHORT_FIO))
        sockets_after_fio = tcp_sockets_to(network.host, tls_target.trsvcid)
        after_fio = {side: ktls_counters(netns) for side, netns in sides.items()}
    for side in sides:
        (contexts, errors), (contexts_open, _) = before[side], opened[side]
        grown = [now - then for now, then in zip(contexts_open, contexts)]
        assert min(grown) >= len(conn.controllers), (
            f"{side}: kTLS TX/RX contexts {contexts} before connect, {contexts_open} after")
        assert after_fio[side] == (contexts_open, errors), (
            f"{side}: kTLS contexts/decrypt errors {opened[side]} -> {after_fio[side]} in fio")
    if tls_target.trtype == "tcp":   # over MPTCP, ss --tcp lists subflows, not the socket with kTLS
        assert_ktls_carried(sockets, sockets_after_fio, results)


@pytest.mark.matrix(trtype=("tcp",), paths=(1,))
@pytest.mark.parametrize("treq", ["not required"], ids=["treq-not-required"])
def test_plaintext_connect_when_tls_not_required(tls_host, tls_target, network):
    """a plaintext connect works when the port has TLS with treq '{treq}'"""
    with connected(tls_host, tls_target, network) as conn:
        keys = {name: tls_host.controller(name).tls_key for name in conn.controllers}
        assert not any(keys.values()), f"plaintext controllers with a tls_key: {keys}"


@pytest.mark.matrix(trtype=("tcp",), paths=(1,))
def test_plaintext_connect_refused_when_tls_required(tls_host, tls_target, network,
                                                     disconnects):
    """a plaintext connect is refused when the port requires TLS"""
    with pytest.raises(SetupError, match="failed"):
        tls_host.connect(tls_target.trtype, network.topology.links[0].traddr,
                         tls_target.trsvcid, tls_target.nqn)


@pytest.mark.matrix(trtype=("tcp",), paths=(1,))
def test_wrong_psk_refused(tls_host, tls_target, network, psks, tlshd, disconnects):
    """a host PSK with the right identity but another secret fails the handshake"""
    with NewKeyring(f"mptcp_nvme.wrong.{tls_target.nqn}") as keyring, \
            TlsKeys(tls_host.hostnqn, [tls_target.nqn], keyring=keyring) as wrong:
        assert wrong.serials[tls_target.nqn] != psks.serials[tls_target.nqn]
        with pytest.raises(SetupError, match="failed"):
            tls_host.connect(tls_target.trtype, network.topology.links[0].traddr,
                             tls_target.trsvcid, tls_target.nqn, tls=True,
                             tls_key=wrong.serials[tls_target.nqn])
    # the host presented the identity the target knows, and the target refused the handshake
    assert psk_description(tls_host.hostnqn, tls_target.nqn) in tlshd["host"].log(), tlshd["host"].log()
    assert re.search(r"Handshake with .* failed", tlshd["target"].log()), tlshd["target"].log()


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(4,), iopolicy=("round-robin",))
@pytest.mark.requires("tool:fio")
def test_tls_multipath_fio(request, tls_host, tls_target, network, psks, iopolicy):
    """TLS on {paths} paths over {trtype} with iopolicy {iopolicy}: every path carries fio"""
    with connected(tls_host, tls_target, network, tls=True) as conn:
        assert_psk_in_use(tls_host, conn, psks)
        tls_host.set_iopolicy(conn.nqn, iopolicy)
        before = network.link_counters()
        fio.run_script_sequence(conn.device, quick.fio_job(request.config, SHORT_FIO))
        moved = network.link_bytes_since(before).of()
    even_share = sum(moved.values()) / len(moved)
    assert all(count >= even_share / 4 for count in moved.values()), (
        f"bytes per path during fio: {moved}")
