"""DH-HMAC-CHAP authentication (blktests nvme/041-045): keys from ``nvme gen-dhchap-key``
on nvmet's host entry, host keys only and bidirectional, each hash and a DH group; the
proof that it is enforced (the same connection without a key, or with another key, is
refused), and re-authentication after the key changed."""

import pytest

from mptcp_nvme.guest import (
    DIAG, SUITE_HOSTNQN, DerivedPsks, fio, initiator, require, SetupError, wait_for)

AUTH_NEEDS = ("kconfig:NVME_HOST_AUTH", "kconfig:NVME_TARGET_AUTH")
CASES = {  # name: (nvmet dhchap_hash, dhchap_dhgroup, bidirectional)
    "sha256-null": ("hmac(sha256)", "null", False),
    "sha384-ffdhe2048-bidirectional": ("hmac(sha384)", "ffdhe2048", True),
    "sha512-null-bidirectional": ("hmac(sha512)", "null", True),
}


def gen_key(nvme_host):
    return nvme_host.run_nvme(["gen-dhchap-key", f"--nqn={SUITE_HOSTNQN}"]).strip()


@pytest.fixture
def auth_host(network):
    return initiator.NvmeHost(prefix=network.host.argv(), hostnqn=SUITE_HOSTNQN)


def secured_target(make_target, keys, hash_name, group):
    attributes = {"dhchap_key": keys["host"], "dhchap_hash": hash_name,
                  "dhchap_dhgroup": group}
    if "ctrl" in keys:
        attributes["dhchap_ctrl_key"] = keys["ctrl"]
    return make_target(allowed_hosts={SUITE_HOSTNQN: attributes})


def secrets(keys):
    return {"dhchap_secret": keys["host"], "dhchap_ctrl_secret": keys.get("ctrl")}


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.parametrize("case", CASES)
def test_auth_connect(request, case, trtype, auth_host, make_target, network, record_property):
    """auth {case} over {trtype}: refused without the key, connected with it"""
    hash_name, group, bidirectional = CASES[case]
    # nvmet takes a DH group only when the kernel's crypto has it: load dh_generic first
    require(request.config, *AUTH_NEEDS,
            *(["kconfig:CRYPTO_DH_RFC7919_GROUPS", "module:dh_generic"] if group != "null" else []))
    keys = {"host": gen_key(auth_host), **({"ctrl": gen_key(auth_host)} if bidirectional else {})}
    target = secured_target(make_target, keys, hash_name, group)
    traddrs = network.topology.traddrs[:1]
    with pytest.raises(SetupError, match="failed"):            # enforced: no key, no entry
        auth_host.connect(trtype, traddrs[0], target.trsvcid, target.nqn)
    assert not auth_host.controllers(target.nqn)
    with auth_host.connected(trtype, traddrs, target.trsvcid, target.nqn,
                             options=secrets(keys)) as connection:
        [name] = connection.controllers
        ctrl_dir = auth_host.sysfs / "class/nvme" / name
        assert (ctrl_dir / "dhchap_secret").read_text().strip() == keys["host"]
        if bidirectional:
            assert (ctrl_dir / "dhchap_ctrl_secret").read_text().strip() == keys["ctrl"]
        result = fio.run(fio.FioJob(numjobs=1, iodepth=8, size=fio.VERIFY_SIZE).verifying(),
                         connection.device, network.host.argv())
    record_property(DIAG, f"{hash_name} {group} {'bidirectional' if bidirectional else 'host key'}: "
                          f"refused without the key; verified {result.read.io_bytes} bytes")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
@pytest.mark.nvme_recovery_expected      # nvmet ends the failed controller: "fatal error"
def test_auth_wrong_key_is_refused(request, trtype, auth_host, make_target, network,
                                   record_property):
    """auth with a wrong key over {trtype} is refused and leaves no controller"""
    require(request.config, *AUTH_NEEDS)
    target = secured_target(make_target, {"host": gen_key(auth_host)}, "hmac(sha256)", "null")
    wrong = gen_key(auth_host)
    with pytest.raises(SetupError) as refused:
        auth_host.connect(trtype, network.topology.traddrs[0], target.trsvcid, target.nqn,
                          options={"dhchap_secret": wrong})
    record_property(DIAG, f"refused: {str(refused.value)[:200]}")
    assert not auth_host.controllers(target.nqn)


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_auth_reauthentication_after_the_key_changes(request, trtype, auth_host, make_target,
                                                     network, record_property):
    """auth re-authentication over {trtype} after the key changes on the target and the host"""
    require(request.config, *AUTH_NEEDS)
    keys = {"host": gen_key(auth_host)}
    target = secured_target(make_target, keys, "hmac(sha256)", "null")
    with auth_host.connected(trtype, network.topology.traddrs[:1], target.trsvcid, target.nqn,
                             options=secrets(keys)) as connection:
        [name] = connection.controllers
        new = gen_key(auth_host)
        target.subsystem.set_host_attribute(SUITE_HOSTNQN, "dhchap_key", new)
        # writing the host's secret makes it authenticate again with the new key
        (auth_host.sysfs / "class/nvme" / name / "dhchap_secret").write_text(new)
        wait_for(lambda: auth_host.controller(name).state == "live",
                 f"{name} live after re-authentication", 20)
        result = fio.run(fio.FioJob(numjobs=1, iodepth=8, size=fio.VERIFY_SIZE).verifying(),
                         connection.device, network.host.argv())
    record_property(DIAG, f"re-authenticated with a new key; verified {result.read.io_bytes} bytes")
    assert result.read.io_bytes > 0


# --- together with TLS ----------------------------------------------------------------
# What Linux 7.3 allows: on a queue secured with a TLS PSK, nvmet asks for no DH-HMAC-CHAP
# (nvmet_has_auth: a host key and no TLS key id), the PSK authenticates the host. Both
# together is secure channel concatenation: DH-HMAC-CHAP on the admin queue derives a new
# TLS PSK, with which the queues then run TLS (fabrics option concat; not with --tls).

def tls_auth_target(make_target, nqn, keys, group="null"):
    """The subsystem for SUITE_HOSTNQN with its DH-HMAC-CHAP key, on ports that offer TLS
    without requiring it (concatenation starts in plaintext)."""
    return make_target(nqn=nqn, tls=True, treq="not required", allowed_hosts={SUITE_HOSTNQN: {
        "dhchap_key": keys["host"], "dhchap_hash": "hmac(sha256)", "dhchap_dhgroup": group}})


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_auth_tls_psk_stands_in_for_dhchap(request, tls_transport, auth_host, make_target,
                                            network, subsysnqn, psks, tlshd, record_property):
    """auth with TLS over {trtype}: plaintext needs the DH-HMAC-CHAP key, a TLS PSK connection does not"""
    require(request.config, *AUTH_NEEDS)
    keys = {"host": gen_key(auth_host)}
    target = tls_auth_target(make_target, subsysnqn, keys)
    traddrs = network.topology.traddrs[:1]
    with pytest.raises(SetupError, match="failed"):            # plaintext: auth enforced
        auth_host.connect(tls_transport, traddrs[0], target.trsvcid, target.nqn)
    assert not auth_host.controllers(target.nqn)
    with auth_host.connected(tls_transport, traddrs, target.trsvcid, target.nqn,
                             tls=True) as connection:
        [name] = connection.controllers
        tls_key = auth_host.controller(name).tls_key
        assert tls_key == f"{psks.serials[target.nqn]:08x}", tls_key
        secret = (auth_host.sysfs / "class/nvme" / name / "dhchap_secret").read_text().strip()
        assert secret == "none", f"{name} has a DH-HMAC-CHAP secret: {secret}"
        result = fio.run(fio.FioJob(numjobs=1, iodepth=8, size=fio.VERIFY_SIZE).verifying(),
                         connection.device, network.host.argv())
    record_property(DIAG, f"plaintext without the key refused; TLS with PSK {tls_key} and no "
                          f"DH-HMAC-CHAP key live, verified {result.read.io_bytes} bytes")


@pytest.mark.matrix(trtype=("tcp", "mptcp"), paths=(1,))
def test_auth_tls_secure_concatenation(request, tls_transport, auth_host, make_target, network,
                                       subsysnqn, tlshd, record_property):
    """auth with TLS over {trtype}: secure channel concatenation, DH-HMAC-CHAP then TLS with the PSK it derived"""
    require(request.config, *AUTH_NEEDS, "kconfig:CRYPTO_DH_RFC7919_GROUPS", "module:dh_generic")
    keys = {"host": gen_key(auth_host)}
    # concatenation needs a DH exchange: nvmet refuses it with the null group
    target = tls_auth_target(make_target, subsysnqn, keys, group="ffdhe2048")
    traddrs = network.topology.traddrs[:1]
    with pytest.raises(SetupError, match="failed"):            # no key: no concatenation
        auth_host.connect(tls_transport, traddrs[0], target.trsvcid, target.nqn,
                          options={"concat": True})
    assert not auth_host.controllers(target.nqn)
    # the derived PSK outlives the connection in .nvme: this test owns and removes it
    with DerivedPsks(SUITE_HOSTNQN, target.nqn) as derived, \
            auth_host.connected(tls_transport, traddrs, target.trsvcid, target.nqn,
                                options={**secrets(keys), "concat": True}) as connection:
        [name] = connection.controllers
        wait_for(lambda: auth_host.controller(name).tls_key, f"{name} to use a derived TLS PSK", 20)
        tls_key = auth_host.controller(name).tls_key
        result = fio.run(fio.FioJob(numjobs=1, iodepth=8, size=fio.VERIFY_SIZE).verifying(),
                         connection.device, network.host.argv())
    handshakes = tlshd["host"].log()
    record_property(DIAG, f"DH-HMAC-CHAP ffdhe2048 then TLS with derived PSK {tls_key}; "
                          f"verified {result.read.io_bytes} bytes; derived PSKs still in .nvme "
                          f"after the disconnect: " + (", ".join(
                              f"{n.split()[0]} ({'revoked' if r else 'not revoked'})"
                              for n, r in derived.left) or "none"))
    assert tls_key, f"{name} has no TLS key after concatenation"
    assert "Handshake with" in handshakes and "was successful" in handshakes, handshakes[-2000:]
