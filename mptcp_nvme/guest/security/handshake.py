"""tlshd, the kernel's TLS handshake agent (net/handshake), in a network namespace:
started, proven ready by its membership of the handshake netlink group, stopped with
its whole process group."""

import array
import contextlib
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
from mptcp_nvme.guest.security.psk import NVME_KEYRING


# --- tlshd ----------------------------------------------------------------------


HANDSHAKE_FAMILY, TLSHD_GROUP = "handshake", "tlshd"


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
