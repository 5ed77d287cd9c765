"""NVMe/TCP TLS 1.3: tlshd in a network namespace, and the PSKs it hands the kernel.

As mptcp_nvme.sh sets it up: one tlshd in each namespace that owns a TLS socket
(target and host), configured to look PSKs up in the ``.nvme`` keyring, and a
retained PSK per (host NQN, subsystem NQN) pair made by nvme-cli, for the
subsystem and for the discovery subsystem. Every resource is a context manager
that undoes exactly what it did, also when a later step fails.
"""

import array
import contextlib
import dataclasses
import os
import re
import signal
import socket
import struct
import tempfile
from pathlib import Path

import psutil

from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError
from mptcp_nvme.poll import wait_for

TLS_NEEDS = ("kconfig:NVME_TCP_TLS", "kconfig:NVME_TARGET_TCP_TLS", "kconfig:NET_HANDSHAKE",
             "kconfig:TLS", "module:tls", "tool:tlshd", "tool:keyctl", "tool:nvme",
             "tool:unshare", "feature:tls",
             "kconfig:NETLINK_DIAG")   # tlshd readiness: its handshake group membership
NVME_KEYRING = ".nvme"
# The TLS selftests connect with this host NQN: their PSKs are made for it.
SUITE_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b5e7e4a-2f2c-4d8e-9a53-6c1f3e2d7a10"
PSK_KEY_TYPE = "psk"
HMAC_SHA256 = 1
HANDSHAKE_FAMILY, TLSHD_GROUP = "handshake", "tlshd"
COMMAND_TIMEOUT = 60
TLS_STAT = Path("/proc/thread-self/net/tls_stat")   # the calling thread's netns


def _command(argv, timeout=COMMAND_TIMEOUT):
    """Run ``argv``; the proc.cmd, whatever its exit code."""
    return proc.cmd(argv, fail=False, timeout=timeout)


def _checked(argv):
    return proc.cmd(argv, timeout=COMMAND_TIMEOUT).stdout


# --- tlshd ----------------------------------------------------------------------


def tlshd_config(keyrings=(NVME_KEYRING,), debug=1):
    """tlshd.conf(5) text: tlshd and GnuTLS debug messages at level ``debug``,
    handshake keys looked up in ``keyrings``."""
    return (f"[debug]\nloglevel={debug}\ntls={debug}\nnl=0\n\n"
            f"[authenticate]\nkeyrings={';'.join(keyrings)}\n")


# Before each handshake tlshd looks the peer's name up (for x.509 checks). A nameserver
# the test namespace cannot reach makes that wait for the resolver's timeouts, which eats
# the kernel's handshake budget (10 s): tlshd runs in a mount namespace of its own with an
# empty /etc/resolv.conf, where a lookup fails at once.
_WITHOUT_NAMESERVER = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount --bind /dev/null /etc/resolv.conf && exec "$@"', "sh"]


def handshake_group():
    """Id of the kernel handshake family's "tlshd" multicast group."""
    # Imported here: the run's leftovers check (health.py) needs this module, not pyroute2.
    from pyroute2.netlink import genlmsg
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket

    with GenericNetlinkSocket() as genl:
        try:
            genl.bind(HANDSHAKE_FAMILY, genlmsg)
        except NetlinkError as err:
            raise SetupError(f"no {HANDSHAKE_FAMILY!r} generic netlink family "
                             f"(CONFIG_NET_HANDSHAKE?): {err}") from err
        return genl.mcast_groups[TLSHD_GROUP]


# linux/netlink.h, linux/sock_diag.h, linux/netlink_diag.h
NETLINK_SOCK_DIAG, NETLINK_GENERIC, SOCK_DIAG_BY_FAMILY = 4, 16, 20
NDIAG_SHOW_GROUPS, NETLINK_DIAG_GROUPS = 0x2, 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLMSGHDR = struct.Struct("=IHHII")
_NLATTR = struct.Struct("=HH")
_NETLINK_DIAG_REQ = struct.Struct("=BBHII8x")
_NETLINK_DIAG_MSG = struct.Struct("=BBBBIIII8x")


def _align(length):
    return (length + 3) & ~3


def _netlink_messages(data):
    """(type, payload) of each netlink message in ``data``."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        yield kind, data[offset + _NLMSGHDR.size:offset + length]
        offset += _align(length)


def _attributes(data):
    """{type: payload} of the netlink attributes in ``data``."""
    attributes, offset = {}, 0
    while offset + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, offset)
        attributes[kind] = data[offset + _NLATTR.size:offset + length]
        offset += _align(length)
    return attributes


def _has_bit(bitmap, bit):
    """Whether ``bit`` is set in a kernel bitmap (an array of unsigned longs)."""
    words = array.array("L", bitmap)
    index, shift = divmod(bit, words.itemsize * 8)
    return index < len(words) and bool(words[index] >> shift & 1)


def netlink_group_members(protocol, group):
    """Inodes of the ``protocol`` netlink sockets of the caller's network namespace
    that joined multicast ``group``: what the kernel's genl_has_listeners() counts,
    as sock_diag (netlink_diag) reports it."""
    request = _NETLINK_DIAG_REQ.pack(socket.AF_NETLINK, protocol, 0, 0, NDIAG_SHOW_GROUPS)
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY,
                            NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    members = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as diag:
        diag.send(header + request)
        while True:
            for kind, payload in _netlink_messages(diag.recv(1 << 16)):
                if kind == NLMSG_DONE:
                    return members
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    raise OSError(code, f"netlink sock_diag: {os.strerror(code)}")
                inode = _NETLINK_DIAG_MSG.unpack_from(payload)[7]
                groups = _attributes(payload[_NETLINK_DIAG_MSG.size:]).get(NETLINK_DIAG_GROUPS)
                if groups and _has_bit(groups, group - 1):   # group n is bit n - 1
                    members.add(inode)


def socket_inodes(pid):
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):   # closed meanwhile
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
            if match:
                inodes.add(int(match.group(1)))
    return inodes


def group_processes(pgid):
    """Pids of the live (not zombie) processes of process group ``pgid``."""
    pids = []
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError):
            if (os.getpgid(process.pid) == pgid
                    and process.info["status"] != psutil.STATUS_ZOMBIE):
                pids.append(process.pid)
    return pids


class Tlshd:
    """tlshd serving the TLS handshakes of the kernel sockets of ``netns``.

    Its messages (``-s``: stderr too) go to ``log_path``; its config is a temporary
    file. Ready once one of its sockets joined the handshake family's "tlshd" group
    in ``netns``, which is how the kernel decides that a handshake agent listens.
    On exit its process group (tlshd and its per-handshake children) gets SIGTERM,
    then SIGKILL after ``stop_timeout``, and must be empty afterwards.
    """

    def __init__(self, netns, log_path, *, keyrings=(NVME_KEYRING,), debug=1,
                 start_timeout=10.0, stop_timeout=5.0, tlshd="tlshd"):
        self.netns = netns
        self.log_path = Path(log_path)
        self.config = tlshd_config(keyrings, debug)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.tlshd = tlshd
        self.process = None

    def __enter__(self):
        group = handshake_group()
        with contextlib.ExitStack() as stack:
            config = stack.enter_context(tempfile.NamedTemporaryFile(
                "w", prefix="tlshd.", suffix=".conf"))
            config.write(self.config)
            config.flush()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            argv = [*self.netns.argv(), *_WITHOUT_NAMESERVER, self.tlshd, "--stderr",
                    "--config", config.name]
            with open(self.log_path, "wb") as log:
                self.process = proc.bkg(argv, output=log, fail=True)
            stack.callback(self._stop)
            wait_for(lambda: self._registered(group),
                     f"tlshd (pid {self.process.pid}) to join the {HANDSHAKE_FAMILY} "
                     f"family's {TLSHD_GROUP!r} group in {self.netns.name}",
                     self.start_timeout)
            self._cleanup = stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        self._cleanup.close()

    def _registered(self, group):
        if self.process.poll() is not None:
            raise SetupError(f"tlshd in {self.netns.name} exited ({self.process.poll()}) "
                             f"before registering; {self.log_path}:\n{self.log_tail()}")
        with self.netns.enter():
            listeners = netlink_group_members(NETLINK_GENERIC, group)
        return bool(listeners & socket_inodes(self.process.pid))

    def log(self):
        """What tlshd logged so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines=20):
        return "\n".join(self.log().splitlines()[-lines:])

    def _signal_group(self, signum):
        with contextlib.suppress(ProcessLookupError):   # the whole group is gone
            os.killpg(self.process.pid, signum)

    def _stop(self):
        self.process.stop(self.stop_timeout)
        if group_processes(self.process.pid):
            self._signal_group(signal.SIGKILL)
        wait_for(lambda: not group_processes(self.process.pid),
                 f"tlshd's process group {self.process.pid} to be empty", self.stop_timeout)


# --- PSKs -----------------------------------------------------------------------


class Keyring:
    """A kernel keyring, named as keyctl finds it (``%:NAME``)."""

    def __init__(self, name=NVME_KEYRING, keyctl="keyctl"):
        self.name = name
        self.keyctl = keyctl

    @property
    def spec(self):
        return f"%:{self.name}"

    def keys(self):
        """(serial, type, description) of every key in it we may view. Listed and
        described rather than searched: the keys nvme-cli makes grant search to their
        possessor only, and .nvme is possessed by tlshd, not by us."""
        for serial in _checked([self.keyctl, "rlist", self.spec]).split():
            described = _command([self.keyctl, "rdescribe", serial])
            if described.ret:    # unlinked meanwhile, or not ours to view
                continue
            kind, _, _, _, name = described.stdout.rstrip("\n").split(";", 4)
            yield int(serial), kind, name

    def find(self, key_type, description):
        """Serial of its ``key_type`` key called ``description``, None when it has none."""
        return next((serial for serial, kind, name in self.keys()
                     if (kind, name) == (key_type, description)), None)

    def unlink(self, serial):
        _checked([self.keyctl, "unlink", str(serial), self.spec])

    def adopt(self, serial):
        """Make a key just inserted here usable: nothing to do in .nvme, which tlshd
        links into its session keyring."""


class NewKeyring(Keyring):
    """A keyring of our own, linked into the user keyring (@u) and unlinked on exit.

    We possess it through the user session keyring (our session keyring when we have
    none of our own, as in the guest). nvme-cli and tlshd may not: nvme-cli links the
    keyring it inserts into to a session of its own, tlshd reads a PSK by serial. So
    it and the keys adopted into it are open to their user (root) as well.
    """

    OPEN_TO_USER = 0x3f3f0000   # possessor and user: view read write search link setattr
    serial = None

    @property
    def spec(self):
        return str(self.serial)

    def __enter__(self):
        self.serial = int(_checked([self.keyctl, "newring", self.name, "@u"]))
        with contextlib.ExitStack() as stack:
            stack.push(self)
            self.adopt(self.serial)
            stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        _checked([self.keyctl, "unlink", str(self.serial), "@u"])

    def adopt(self, serial):
        _checked([self.keyctl, "setperm", str(serial), hex(self.OPEN_TO_USER)])


def suite_keys(keyring=None):
    """Descriptions of the PSKs in ``keyring`` (.nvme) made for SUITE_HOSTNQN: after a
    run there must be none."""
    try:
        keys = list((keyring or Keyring()).keys())
    except SetupError:          # no keyctl, or no .nvme keyring (nvme modules not loaded)
        return []
    return sorted(name for _, kind, name in keys if kind == PSK_KEY_TYPE and SUITE_HOSTNQN in name)


class DerivedPsks:
    """The PSKs that secure channel concatenation derives for ``hostnqn`` and
    ``subsysnqn`` (identity "NVMe1G<hmac> <hostnqn> <subsysnqn> <digest>"), which host
    and target insert in .nvme: on exit, those still linked there are listed in ``left``
    as (description, revoked) and unlinked. The host revokes its key on teardown, and a
    revoked key stays linked until the keyring's garbage collection (5 minutes)."""

    def __init__(self, hostnqn, subsysnqn, keyring=None):
        self.prefix = f" {hostnqn} {subsysnqn} "
        self.keyring = keyring or Keyring()
        self.left = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        flags = _proc_key_flags()
        for serial, kind, name in list(self.keyring.keys()):
            if kind == PSK_KEY_TYPE and name.startswith("NVMe1G") and self.prefix in name:
                self.left.append((name, "R" in flags.get(serial, "")))
                self.keyring.unlink(serial)


def _proc_key_flags():
    """{serial: flags column of /proc/keys} ("R" at its second place: revoked)."""
    flags = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/keys").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1:
                flags[int(fields[0], 16)] = fields[1]
    return flags


def psk_description(hostnqn, subsysnqn, hmac=HMAC_SHA256):
    """How a retained PSK (TLS identity version 0) is called in its keyring."""
    return f"NVMe0R{hmac:02d} {hostnqn} {subsysnqn}"


def has_keys_plugin(nvme="nvme"):
    """Whether this nvme-cli has the ``keys`` plugin (nvme-cli 3), that lists gen-tls."""
    done = _command([nvme, "keys", "help"])
    return re.search(r"^\s+gen-tls\s", done.stdout + done.stderr, re.MULTILINE) is not None


def gen_tls_argv(hostnqn, subsysnqn, keyring=NVME_KEYRING, hmac=HMAC_SHA256, nvme="nvme",
                 keys_plugin=None):
    """nvme-cli's command that makes a retained PSK and inserts it in ``keyring``:
    ``nvme keys gen-tls`` where it exists, else ``nvme gen-tls-key``."""
    if keys_plugin is None:
        keys_plugin = has_keys_plugin(nvme)
    command = ["keys", "gen-tls"] if keys_plugin else ["gen-tls-key"]
    return [nvme, *command, f"--keyring={keyring}", f"--hostnqn={hostnqn}",
            f"--subsysnqn={subsysnqn}", f"--hmac={hmac}", "--insert"]


_INSERTED = re.compile(r"Inserted TLS key ([0-9a-fA-F]+)")


class TlsKeys:
    """A fresh retained PSK for ``hostnqn`` and each of ``subsysnqns`` in ``keyring``
    (default: .nvme), made by nvme-cli.

    ``serials`` maps each subsystem NQN to its key. A key that already exists is
    not replaced (SetupError): on exit, exactly the keys inserted here are unlinked.
    """

    def __init__(self, hostnqn, subsysnqns, *, keyring=None, hmac=HMAC_SHA256, nvme="nvme"):
        self.hostnqn = hostnqn
        self.subsysnqns = tuple(subsysnqns)
        self.keyring = keyring or Keyring()
        self.hmac = hmac
        self.nvme = nvme
        self.serials = {}

    def __enter__(self):
        keys_plugin = has_keys_plugin(self.nvme)
        with contextlib.ExitStack() as stack:
            for subsysnqn in self.subsysnqns:
                self.serials[subsysnqn] = self._insert(stack, subsysnqn, keys_plugin)
            self._cleanup = stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        self._cleanup.close()

    def _insert(self, stack, subsysnqn, keys_plugin):
        description = psk_description(self.hostnqn, subsysnqn, self.hmac)
        existing = self.keyring.find(PSK_KEY_TYPE, description)
        if existing is not None:
            raise SetupError(f"{self.keyring.name} already holds {description!r} "
                             f"(serial {existing}): not replacing it")
        output = _checked(gen_tls_argv(self.hostnqn, subsysnqn, self.keyring.name,
                                       self.hmac, self.nvme, keys_plugin))
        inserted = _INSERTED.search(output)
        if not inserted:
            raise SetupError(f"nvme-cli did not say which key it inserted: {output!r}")
        serial = int(inserted.group(1), 16)
        stack.callback(self.keyring.unlink, serial)
        self.keyring.adopt(serial)
        found = self.keyring.find(PSK_KEY_TYPE, description)
        if found != serial:
            raise SetupError(f"inserted key {serial} but {self.keyring.name} finds "
                             f"{description!r} as {found}")
        return serial


# --- kernel TLS counters ------------------------------------------------------------


def tls_stat(netns):
    """/proc/net/tls_stat of ``netns`` (per network namespace) as {counter: value}."""
    with netns.enter():
        text = TLS_STAT.read_text()
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


@dataclasses.dataclass(frozen=True)
class Socket:
    """An established socket as ``ss --info`` shows it."""

    local: str
    peer: str
    ulp: str | None       # upper layer protocol: "tls" once kTLS is set up on it
    bytes_sent: int
    bytes_received: int


def _field(pattern, text):
    match = re.search(pattern, text)
    return match.group(1) if match else None


def parse_ss(text):
    """Sockets of ``ss -Hin`` output: a line per socket, its details indented below it.
    ss leaves a zero byte count out."""
    sockets = []
    for line in text.splitlines():
        if line and not line[0].isspace():
            *_, local, peer = line.split()
            sockets.append((local, peer, []))
        elif sockets:
            sockets[-1][2].append(line)
    parsed = []
    for local, peer, info in sockets:
        details = " ".join(info)
        parsed.append(Socket(local, peer, _field(r"\btcp-ulp-(\w+)", details),
                             int(_field(r"\bbytes_sent:(\d+)", details) or 0),
                             int(_field(r"\bbytes_received:(\d+)", details) or 0)))
    return parsed


def tcp_sockets_to(netns, port):
    """The established TCP sockets of ``netns`` whose peer port is ``port``."""
    return parse_ss(_checked([*netns.argv(), "ss", "-Htin", "state", "established",
                              "dport", "=", f":{port}"]))

