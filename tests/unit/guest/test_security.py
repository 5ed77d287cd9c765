"""tls: tlshd's config and lifecycle, PSK making and cleanup, with fake tlshd, nvme and
keyctl programs run for real, and the netlink membership check on this host's kernel."""

import configparser
import contextlib
import json
import os
import socket
import sys
import textwrap

import pytest
from pyroute2.netlink import genlmsg
from pyroute2.netlink.generic import GenericNetlinkSocket

from mptcp_nvme.guest.security import handshake
from mptcp_nvme.guest.security import ktls
from mptcp_nvme.guest.security import psk
from mptcp_nvme.errors import SetupError
from mptcp_nvme.poll import PollTimeout

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b5e7e4a-2f2c-4d8e-9a53-6c1f3e2d7a10"
SUBSYS = "nqn.2014-08.org.nvmexpress.tcpdev.4242.7"
DISCOVERY = "nqn.2014-08.org.nvmexpress.discovery"
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 270, 1

# keyctl and nvme over one JSON file of keyrings: {name: {"serial": n, "keys": {serial:
# [type, description]}}}, each call but "nvme keys help" logged to FAKE_KEYS_LOG. nvme
# answers "keys help" as nvme-cli 3 when FAKE_KEYS_PLUGIN is set and as nvme-cli 2
# otherwise, refuses the subsystem
# NQNs in FAKE_NVME_REFUSE and does not say what it inserted with FAKE_NVME_QUIET.
FAKE_KEYS = r'''
import json, os, sys

STATE = os.environ["FAKE_KEYS_STATE"]


def load():
    with open(STATE) as file:
        return json.load(file)


def save(state):
    with open(STATE, "w") as file:
        json.dump(state, file)


def ring(state, spec):
    for name, keyring in state.items():
        if spec in (f"%:{name}", str(keyring["serial"]), name):
            return keyring
    sys.exit(f"keyctl: no keyring {spec}")


def new_serial(state):
    return 1 + max([int(s) for r in state.values() for s in r["keys"]]
                   + [r["serial"] for r in state.values()])


def keyctl(args):
    state = load()
    if args[0] == "rlist":
        print(" ".join(ring(state, args[1])["keys"]))
        return 0
    if args[0] == "rdescribe":
        for keyring in state.values():
            if args[1] in keyring["keys"]:
                kind, description = keyring["keys"][args[1]]
                print(f"{kind};0;0;3f010000;{description}")
                return 0
        print("keyctl_describe_alloc: Required key not available", file=sys.stderr)
        return 1
    if args[0] == "unlink":
        serial, parent = args[1:]
        if parent == "@u":
            name = next(name for name, r in state.items() if str(r["serial"]) == serial)
            del state[name]
        elif ring(state, parent)["keys"].pop(serial, None) is None:
            print("keyctl_unlink: No such file or directory", file=sys.stderr)
            return 1
        save(state)
        return 0
    if args[0] == "setperm":
        return 0
    if args[0] == "newring":
        serial = new_serial(state)
        state[args[1]] = {"serial": serial, "keys": {}}
        save(state)
        print(serial)
        return 0
    return 2


def nvme(args):
    if args[:2] == ["keys", "help"]:
        if os.environ.get("FAKE_KEYS_PLUGIN"):
            print("The following are all implemented sub-commands:\n"
                  "  gen-kxchap      Generate a KX-HMAC-CHAP secret\n"
                  "  gen-tls         Generate a TLS key in NVMe PSK Interchange format")
            return 0
        print("ERROR: Invalid sub-command 'keys'", file=sys.stderr)
        print("  gen-tls-key     Generate NVMeoF TLS PSK\n"
              "  tls-key         Manipulate NVMeoF TLS PSK")
        return 1
    options = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if options["subsysnqn"] in os.environ.get("FAKE_NVME_REFUSE", "").split():
        print("Failed to insert key, Permission denied", file=sys.stderr)
        return 1
    state = load()
    serial = new_serial(state)
    description = f"NVMe0R{int(options['hmac']):02d} {options['hostnqn']} {options['subsysnqn']}"
    ring(state, options["keyring"])["keys"][str(serial)] = ["psk", description]
    save(state)
    print("NVMeTLSkey-1:01:ZmFrZWZha2VmYWtlZmFrZWZha2VmYWtlZmFrZWZha2WLrX4d:")
    if not os.environ.get("FAKE_NVME_QUIET"):
        print(f"Inserted TLS key {serial:08x}")
    return 0


program = os.path.basename(sys.argv[0])
if sys.argv[1:3] != ["keys", "help"]:
    with open(os.environ["FAKE_KEYS_LOG"], "a") as log:
        log.write(json.dumps([program, *sys.argv[1:]]) + "\n")
sys.exit({"keyctl": keyctl, "nvme": nvme}[program](sys.argv[1:]))
'''

# tlshd as far as Tlshd sees it: logs its argv and config, joins FAKE_TLSHD_GROUP on
# a generic netlink socket and waits for a signal. FAKE_TLSHD: "exit" quits at once,
# "stubborn" ignores SIGTERM, "orphan" leaves a child that ignores SIGTERM.
FAKE_TLSHD = r'''
import os, signal, socket, sys

config = sys.argv[sys.argv.index("--config") + 1]
print("argv:", *sys.argv[1:])
print(open(config).read(), flush=True)
mode = os.environ.get("FAKE_TLSHD", "")
if mode == "exit":
    sys.exit("tlshd: Kernel handshake service is not available")
if mode in ("stubborn", "orphan"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "orphan" and os.fork():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
genl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)
genl.bind((0, 0))
genl.setsockopt(270, 1, int(os.environ["FAKE_TLSHD_GROUP"]))
while True:
    signal.pause()
'''


def install(bin_dir, name, source):
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n" + source)
    path.chmod(0o755)
    return path


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """Fake nvme and keyctl on PATH over a .nvme keyring holding one unrelated key."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("nvme", "keyctl"):
        install(bin_dir, name, FAKE_KEYS)
    state = tmp_path / "keys.json"
    state.write_text(json.dumps({".nvme": {"serial": 100, "keys": {
        "101": ["psk", psk.psk_description("nqn.other-host", SUBSYS)]}}}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KEYS_STATE", str(state))
    log = tmp_path / "calls.log"
    log.touch()
    monkeypatch.setenv("FAKE_KEYS_LOG", str(log))

    class Keys:
        def rings(self):
            return json.loads(state.read_text())

        def calls(self, program):
            calls = [json.loads(line) for line in log.read_text().splitlines()]
            return [call[1:] for call in calls if call[0] == program]

        def nvme_calls(self):
            return self.calls("nvme")

    return Keys()


# --- tlshd config -------------------------------------------------------------------


def test_tlshd_config_reads_as_tlshd_conf():
    config = configparser.ConfigParser()
    config.read_string(handshake.tlshd_config(debug=3))
    assert dict(config["debug"]) == {"loglevel": "3", "tls": "3", "nl": "0"}
    assert dict(config["authenticate"]) == {"keyrings": ".nvme"}


def test_tlshd_config_separates_keyrings_with_semicolons():
    config = configparser.ConfigParser()
    config.read_string(handshake.tlshd_config(keyrings=(".nvme", ".nfs")))
    assert config["authenticate"]["keyrings"] == ".nvme;.nfs"


# --- nvme-cli command choice -----------------------------------------------------


def test_gen_tls_argv_falls_back_to_gen_tls_key_on_nvme_cli_2(keys):
    assert psk.gen_tls_argv(HOSTNQN, SUBSYS) == [
        "nvme", "gen-tls-key", "--keyring=.nvme", f"--hostnqn={HOSTNQN}",
        f"--subsysnqn={SUBSYS}", "--hmac=1", "--insert"]


def test_gen_tls_argv_uses_the_keys_plugin_where_it_exists(keys, monkeypatch):
    monkeypatch.setenv("FAKE_KEYS_PLUGIN", "1")
    assert psk.gen_tls_argv(HOSTNQN, SUBSYS, keyring="mine", hmac=2)[:3] == [
        "nvme", "keys", "gen-tls"]
    assert psk.gen_tls_argv(HOSTNQN, SUBSYS, keyring="mine", hmac=2)[3:] == [
        "--keyring=mine", f"--hostnqn={HOSTNQN}", f"--subsysnqn={SUBSYS}", "--hmac=2",
        "--insert"]


# --- PSKs -----------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", [False, True], ids=["nvme-cli-2", "nvme-cli-3"])
def test_keys_are_inserted_and_exactly_those_unlinked(keys, monkeypatch, plugin):
    if plugin:
        monkeypatch.setenv("FAKE_KEYS_PLUGIN", "1")
    before = keys.rings()
    with psk.TlsKeys(HOSTNQN, [SUBSYS, DISCOVERY]) as psks:
        inside = keys.rings()[".nvme"]["keys"]
        assert {inside[str(serial)][1] for serial in psks.serials.values()} == {
            f"NVMe0R01 {HOSTNQN} {SUBSYS}", f"NVMe0R01 {HOSTNQN} {DISCOVERY}"}
        assert list(psks.serials) == [SUBSYS, DISCOVERY]
    assert keys.rings() == before
    assert not [call for call in keys.calls("keyctl") if call[0] == "setperm"]
    subcommand = ["keys", "gen-tls"] if plugin else ["gen-tls-key"]
    assert [call[:len(subcommand)] for call in keys.nvme_calls()] == [subcommand] * 2


def test_an_existing_key_is_not_replaced(keys):
    with psk.TlsKeys(HOSTNQN, [SUBSYS]):
        with pytest.raises(SetupError, match=f"already holds 'NVMe0R01 {HOSTNQN} {SUBSYS}'"):
            with psk.TlsKeys(HOSTNQN, [DISCOVERY, SUBSYS]):
                pass
        assert len(keys.rings()[".nvme"]["keys"]) == 2    # the first context's key stays
    assert len(keys.nvme_calls()) == 2                     # never asked to replace it


def test_a_failed_insert_unlinks_the_keys_inserted_before(keys, monkeypatch):
    monkeypatch.setenv("FAKE_NVME_REFUSE", DISCOVERY)
    before = keys.rings()
    with pytest.raises(SetupError, match="Permission denied"):
        with psk.TlsKeys(HOSTNQN, [SUBSYS, DISCOVERY]):
            pass
    assert keys.rings() == before


def test_an_insert_nvme_cli_does_not_report_is_an_error(keys, monkeypatch):
    monkeypatch.setenv("FAKE_NVME_QUIET", "1")
    with pytest.raises(SetupError, match="did not say which key it inserted"):
        with psk.TlsKeys(HOSTNQN, [SUBSYS]):
            pass


def test_keys_in_a_new_keyring_leave_nothing_behind(keys):
    before = keys.rings()
    with psk.NewKeyring("scratch") as keyring, \
            psk.TlsKeys(HOSTNQN, [SUBSYS], keyring=keyring) as psks:
        scratch = keys.rings()["scratch"]
        assert scratch["serial"] == keyring.serial
        assert list(scratch["keys"]) == [str(psks.serials[SUBSYS])]
        assert keys.nvme_calls()[0][1] == "--keyring=scratch"
        opened = [call[1] for call in keys.calls("keyctl") if call[0] == "setperm"]
        assert opened == [str(keyring.serial), str(psks.serials[SUBSYS])]
    assert keys.rings() == before


# --- netlink multicast membership (this host's kernel) -------------------------------


@pytest.fixture
def nlctrl_notify():
    """Id of the generic netlink controller's "notify" group, joinable without privileges."""
    with GenericNetlinkSocket() as genl:
        genl.bind("nlctrl", genlmsg)
        return genl.mcast_groups["notify"]


def members_or_skip(group):
    try:
        return handshake.netlink_group_members(handshake.NETLINK_GENERIC, group)
    except OSError as err:
        pytest.skip(f"no netlink sock_diag on this kernel: {err}")


def test_group_members_are_the_sockets_that_joined(nlctrl_notify):
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, handshake.NETLINK_GENERIC) as genl:
        genl.bind((0, 0))
        inode = os.fstat(genl.fileno()).st_ino
        assert inode in handshake.socket_inodes(os.getpid())
        assert inode not in members_or_skip(nlctrl_notify)
        genl.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, nlctrl_notify)
        assert inode in members_or_skip(nlctrl_notify)
        assert inode not in members_or_skip(nlctrl_notify + 1)


def test_bits_of_a_kernel_bitmap():
    words = [1 << 63, 1 << 1]
    bitmap = b"".join(word.to_bytes(8, sys.byteorder) for word in words)
    assert [bit for bit in range(130) if handshake._has_bit(bitmap, bit)] == [63, 65]


# --- tlshd lifecycle (fake tlshd, no namespace) -----------------------------------


class HereNetns:
    """The caller's own network namespace, as topology.Netns offers it."""

    name = "here"

    def argv(self):
        return []

    def enter(self):
        return contextlib.nullcontext(self)


@pytest.fixture
def fake_tlshd(tmp_path, monkeypatch, nlctrl_notify):
    if os.geteuid():
        pytest.skip("tlshd starts in a mount namespace of its own: root only")
    members_or_skip(nlctrl_notify)
    monkeypatch.setattr(handshake, "handshake_group", lambda: nlctrl_notify)
    monkeypatch.setenv("FAKE_TLSHD_GROUP", str(nlctrl_notify))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    path = install(bin_dir, "tlshd", FAKE_TLSHD)

    def start(mode="", **options):
        monkeypatch.setenv("FAKE_TLSHD", mode)
        return handshake.Tlshd(HereNetns(), tmp_path / "logs" / "tlshd.log", tlshd=str(path),
                         **options)

    return start


def test_tlshd_is_ready_once_registered_and_gone_after(fake_tlshd, nlctrl_notify):
    with fake_tlshd() as tlshd:
        pid = tlshd.process.pid
        assert handshake.socket_inodes(pid) & members_or_skip(nlctrl_notify)
        log = tlshd.log_path.read_text()
    assert tlshd.process.ret == -15    # SIGTERM
    assert not handshake.group_processes(pid)
    assert "argv: --stderr --config" in log and "keyrings=.nvme" in log
    assert tlshd.log_path.exists()            # kept as an artifact


def test_tlshd_that_ignores_sigterm_is_killed(fake_tlshd):
    with fake_tlshd("stubborn", stop_timeout=0.5) as tlshd:
        pass
    assert tlshd.process.ret == -9
    assert not handshake.group_processes(tlshd.process.pid)


def test_a_child_left_in_tlshd_group_is_killed_too(fake_tlshd):
    with fake_tlshd("orphan", stop_timeout=0.5) as tlshd:
        assert len(handshake.group_processes(tlshd.process.pid)) == 2
    assert not handshake.group_processes(tlshd.process.pid)


def test_tlshd_that_exits_is_reported_with_its_log(fake_tlshd):
    with pytest.raises(SetupError, match="exited .* before registering(.|\n)*not available"):
        with fake_tlshd("exit"):
            pass


def test_tlshd_that_never_registers_times_out_and_is_stopped(fake_tlshd, monkeypatch):
    monkeypatch.setattr(handshake, "handshake_group", lambda: 31)   # a group it does not join
    tlshd = fake_tlshd(start_timeout=0.5)
    with pytest.raises(PollTimeout, match="to join the handshake family's 'tlshd' group in here"):
        with tlshd:
            pass
    assert not handshake.group_processes(tlshd.process.pid)


# ss -Htin state established dport = :PORT, as iproute2 prints it: a kTLS socket and a plain
# one that has received nothing (ss leaves bytes_received:0 out).
SS_OUTPUT = """\
0      0      10.1.1.2:45832 10.1.1.1:21740
\t cubic wscale:7,7 rto:204 rtt:1.62/0.51 mss:1448 cwnd:10 bytes_sent:73120 bytes_acked:73121 bytes_received:2204436 segs_out:1710 segs_in:1903 send 71.5Mbps tcp-ulp-tls version: 1.3 cipher: aes-gcm-128 rxconf: sw txconf: sw
0      0      10.1.2.2:41220 10.1.2.1:21740
\t cubic wscale:7,7 rto:204 rtt:0.5/0.25 mss:1448 cwnd:10 bytes_sent:72 bytes_acked:73 segs_out:3 segs_in:2
"""


def test_ss_output_gives_ulp_and_byte_counts():
    assert ktls.parse_ss(SS_OUTPUT) == [
        ktls.Socket("10.1.1.2:45832", "10.1.1.1:21740", "tls", 73120, 2204436),
        ktls.Socket("10.1.2.2:41220", "10.1.2.1:21740", None, 72, 0)]


def test_tls_stat_parses_the_counters(tmp_path, monkeypatch):
    stat = tmp_path / "tls_stat"
    stat.write_text(textwrap.dedent("""\
        TlsCurrTxSw                     \t3
        TlsCurrRxSw                     \t3
        TlsDecryptError                 \t0
        """))
    monkeypatch.setattr(ktls, "TLS_STAT", stat)
    assert ktls.tls_stat(HereNetns()) == {"TlsCurrTxSw": 3, "TlsCurrRxSw": 3,
                                         "TlsDecryptError": 0}
