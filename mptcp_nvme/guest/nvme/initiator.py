"""The NVMe host side: discover, connect one controller per path, find the namespace.

Commands run behind an argv ``prefix`` (e.g. ``["nsenter", "--net=/run/netns/ns2"]``)
because the kernel opens the controller's sockets in the netns of the process
that asks for the connection. sysfs is read from ``sysfs`` so unit tests can
hand a fake tree.

nvme-cli (libnvme 1.x) passes any ``-t`` string to the kernel unchecked, but
adds ``tls`` (and the digests, tls_key, concat) only when the transport is
"tcp": ``nvme connect -t mptcp --tls`` would silently connect without TLS.
Such connections are made by writing the option string to /dev/nvme-fabrics.
"""

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path

from mptcp_nvme.guest.checks import requirements
from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError
from mptcp_nvme.guest.nvme import commands
from mptcp_nvme.guest.nvme.fabrics import (CONNECT_OPTIONS, FABRICS_DEVICE, TCP_ONLY_IN_LIBNVME,
                                         checked_options, fabrics_options, hostid_for,
                                         parse_address, parse_discovery_log, parse_fabrics_reply)
from mptcp_nvme.poll import wait_for

# What a test using this module needs of the kernel and rootfs (checks.gates.require).
REQUIREMENTS = ("module:nvme_tcp", "kconfig:NVME_MULTIPATH", "tool:nvme")
CONNECT_TIMEOUT = 60

_CONTROLLER = re.compile(r"nvme\d+")


def controller_number(name):
    """nvmeN's N: controllers in the order the kernel numbered them (nvme9 before nvme10)."""
    return int(name[4:])


_DISK = re.compile(r"nvme\d+n\d+")  # not the per-path nvmeXcYnZ: they have no /dev node

# Write the options and read the kernel's reply on the same open file: the
# reply belongs to that file. Runs behind the prefix, in the host netns.
_FABRICS_WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.write(fd, sys.argv[2].encode())
    sys.stdout.write(os.read(fd, 4096).decode())
except OSError as err:
    sys.exit(f"{err.strerror} ({err.errno})")
finally:
    os.close(fd)
"""


class IopolicyUnsupported(SetupError):
    """The kernel refused an iopolicy (e.g. queue-depth before Linux 6.11)."""

    def __init__(self, policy, path):
        self.policy = policy
        super().__init__(f"{path}: the kernel refused iopolicy {policy!r} (EINVAL)")


@dataclasses.dataclass(frozen=True)
class Controller:
    """A controller as sysfs shows it; ``tls_key`` is None without TLS."""

    name: str
    transport: str          # sysfs; "tcp" for mptcp controllers of some series revisions
    address: dict
    state: str
    tls_key: str | None
    queue_count: int | None = None   # admin + I/O queues


@dataclasses.dataclass(frozen=True)
class Connection:
    """A connected subsystem: its controllers (one per path) and namespace block device."""

    nqn: str
    controllers: tuple
    device: str


class NvmeHost:
    """The NVMe host in one network namespace (entered through ``prefix``).

    ``hostnqn``, when given, is used for every connection (TLS PSKs are looked
    up by it), with ``hostid`` defaulting to ``hostid_for(hostnqn)``.
    """

    def __init__(self, prefix=(), *, sysfs="/sys", fabrics_device=FABRICS_DEVICE,
                 hostnqn=None, hostid=None, nvme="nvme"):
        self.prefix = list(prefix)
        self.sysfs = Path(sysfs)
        self.fabrics_device = fabrics_device
        self.hostnqn = hostnqn
        self.hostid = hostid or (hostid_for(hostnqn) if hostnqn else None)
        self.nvme = nvme

    # --- commands -----------------------------------------------------------

    def _run(self, argv, what=None, timeout=CONNECT_TIMEOUT):
        done = proc.cmd([*self.prefix, *argv], fail=False, timeout=timeout)
        if done.ret:
            output = done.stderr.strip() or done.stdout.strip()
            raise SetupError(f"{what or done.text} failed ({done.ret}): {output}")
        return done.stdout

    def _host_args(self):
        if not self.hostnqn:
            return []
        return ["--hostnqn", self.hostnqn, "--hostid", self.hostid]

    def nvme_cli_carries(self, trtype, tls=False, options=None):
        """Whether ``nvme connect`` makes this connection as asked: nvme-cli is
        installed, and TLS or digests are only asked for "tcp" (the one transport
        libnvme adds them for)."""
        tcp_only = tls or any(name in TCP_ONLY_IN_LIBNVME for name in checked_options(options))
        return shutil.which(self.nvme) is not None and (trtype == "tcp" or not tcp_only)

    def discover(self, trtype, traddr, trsvcid, tls=False, host_iface=None):
        """The discovery log of the target at traddr:trsvcid, via ``nvme discover``."""
        return self.discovery_log(trtype, traddr, trsvcid, tls, host_iface)[1]

    def discovery_log(self, trtype, traddr, trsvcid, tls=False, host_iface=None):
        """(generation counter, records) of the target's discovery log."""
        if not self.nvme_cli_carries(trtype, tls):
            raise SetupError(f"nvme-cli cannot discover over {trtype} with TLS "
                             f"(libnvme adds tls for tcp only) or is not installed")
        argv = [self.nvme, "discover", "-t", trtype, "-a", traddr, "-s", str(trsvcid),
                *self._host_args(), *(["--host-iface", host_iface] if host_iface else []),
                *(["--tls"] if tls else []), "-o", "json"]
        return parse_discovery_log(self._run(argv))

    def connect(self, trtype, traddr, trsvcid, nqn, *, tls=False, tls_key=None,
                host_iface=None, options=None):
        """Connect one controller (one path) and return its name, e.g. "nvme3".
        ``tls_key``: serial of the PSK to use instead of the one the kernel would
        look up for (hostnqn, nqn). ``options``: {CONNECT_OPTIONS name: value}."""
        if self.nvme_cli_carries(trtype, tls, options):
            argv = [self.nvme, "connect", "-t", trtype, "-a", traddr, "-s", str(trsvcid),
                    "-n", nqn, *self._host_args(),
                    *(["--host-iface", host_iface] if host_iface else []),
                    *(["--tls"] if tls else []),
                    *(["--tls-key", str(tls_key)] if tls_key is not None else []),
                    *(f"--{name.replace('_', '-')}" + ("" if CONNECT_OPTIONS[name] else f"={value}")
                      for name, value in checked_options(options).items()),
                    "-o", "json"]
            name = self._connected_device(self._run(argv))
        else:
            options = fabrics_options(trtype, traddr, trsvcid, nqn, hostnqn=self.hostnqn,
                                      hostid=self.hostid, tls=tls, tls_key=tls_key,
                                      host_iface=host_iface, options=options)
            name = parse_fabrics_reply(self._run(
                [sys.executable, "-c", _FABRICS_WRITER, self.fabrics_device, options],
                what=f"writing {options!r} to {self.fabrics_device}"))
        if tls and not self.controller(name).tls_key:
            raise SetupError(f"{name} to {traddr}:{trsvcid} is up without TLS (no tls_key)")
        return name

    def connect_from(self, netns, trtype, traddr, trsvcid, nqn, options=None):
        """connect() without a process: this thread enters ``netns`` (where the kernel
        makes the queue sockets) and writes the options to /dev/nvme-fabrics itself. For
        loops of many connections (churn), where nvme-cli's start-up would dominate."""
        text = fabrics_options(trtype, traddr, trsvcid, nqn, hostnqn=self.hostnqn,
                               hostid=self.hostid, options=options)
        with netns.enter():
            fd = os.open(self.fabrics_device, os.O_RDWR)
            try:
                os.write(fd, text.encode())
                reply = os.read(fd, 4096).decode()
            except OSError as err:
                raise SetupError(f"writing {text!r} to {self.fabrics_device} failed: "
                                 f"{err.strerror} ({err.errno})") from None
            finally:
                os.close(fd)
        return parse_fabrics_reply(reply)

    @staticmethod
    def _connected_device(text):
        try:
            return json.loads(text)["device"]
        except (ValueError, KeyError, TypeError) as err:
            raise SetupError(f"unexpected nvme connect output: {text[:200]!r}") from err

    def disconnect(self, nqn, timeout=10.0, nvme_cli=True):
        """Remove every controller of ``nqn`` and wait until sysfs shows none: with
        ``nvme disconnect``, or (without nvme-cli or ``nvme_cli``) through sysfs."""
        if nvme_cli and shutil.which(self.nvme):
            self._run([self.nvme, "disconnect", "-n", nqn])
        else:
            for name in self._controller_names(nqn):
                self.delete_controller(name)
        wait_for(lambda: not self._controller_names(nqn),
                 f"the controllers of {nqn} to go away", timeout)

    def settle(self, timeout=30):
        """Wait for udev to finish with new devices: removing a namespace while udev
        still reads it turns its reads into "Buffer I/O error" in the kernel log. Without
        udev (the suite's guest) nothing reads new devices behind the test's back."""
        if shutil.which("udevadm"):
            self._run(["udevadm", "settle", f"--timeout={timeout}"], timeout=timeout + 5)

    def nvme_list(self):
        """``nvme list -o json``: the namespaces the host sees (a diagnostic step)."""
        try:
            return json.loads(self._run([self.nvme, "list", "-o", "json"]) or "{}")
        except ValueError as err:
            raise SetupError(f"unexpected nvme list output: {err}") from err

    def run_nvme(self, argv):
        """``nvme ARGV``'s output (e.g. gen-dhchap-key)."""
        return self._run([self.nvme, *argv])

    def admin(self, argv):
        """``nvme ARGV -o json`` (an admin command or a listing), its JSON document."""
        text = self._run([self.nvme, *argv, "-o", "json"])
        try:
            return json.loads(text)
        except ValueError as err:
            raise SetupError(f"nvme {' '.join(argv)}: not JSON ({err}): {text[:200]!r}") from None

    def status_of(self, argv, timeout=CONNECT_TIMEOUT):
        """``nvme ARGV``, a command that may fail with an NVMe status: (its output, None)
        where it succeeds, (its output, commands.NvmeStatus) where the device failed it;
        SetupError where it failed without one (a usage error, a missing device)."""
        done = proc.cmd([*self.prefix, self.nvme, *argv], fail=False, timeout=timeout)
        if not done.ret:
            return done.stdout, None
        status = commands.parse_status(done.stderr + done.stdout)
        if status is None:
            output = done.stderr.strip() or done.stdout.strip()
            raise SetupError(f"{done.text} failed ({done.ret}) without an NVMe status: {output}")
        return done.stdout, status

    def flush(self, device):
        """``nvme flush``: commit the namespace's volatile write cache."""
        self._run([self.nvme, "flush", device])

    @contextlib.contextmanager
    def connected(self, trtype, traddrs, trsvcid, nqn, *, tls=False, nsid=1, timeout=10.0,
                  host_iface=None, options=None):
        """Connect one controller per target address; always disconnect ``nqn`` on exit.
        ``host_iface``: one interface for all, or {traddr: interface}."""
        try:
            controllers = tuple(self.connect(
                trtype, traddr, trsvcid, nqn, tls=tls, options=options,
                host_iface=host_iface.get(traddr) if isinstance(host_iface, dict) else host_iface)
                for traddr in traddrs)
            yield Connection(nqn, controllers, self.namespace_device(nqn, nsid, timeout))
        finally:
            self.settle()
            self.disconnect(nqn)

    # --- sysfs --------------------------------------------------------------

    def _subsystem_dir(self, nqn):
        for subsys in sorted((self.sysfs / "class/nvme-subsystem").glob("nvme-subsys*")):
            with contextlib.suppress(OSError):
                if (subsys / "subsysnqn").read_text().strip() == nqn:
                    return subsys
        return None

    def _controller_names(self, nqn):
        subsys = self._subsystem_dir(nqn)
        if subsys is None:
            return []
        return sorted((p.name for p in subsys.iterdir() if _CONTROLLER.fullmatch(p.name)),
                      key=controller_number)

    def subsystem(self, nqn, timeout=10.0):
        """The nvme-subsysN directory name of ``nqn``, polled for until ``timeout``."""
        return wait_for(lambda: self._subsystem_dir(nqn),
                        f"subsystem {nqn} under {self.sysfs}/class/nvme-subsystem",
                        timeout).name

    def controller(self, name):
        """The sysfs view of controller ``name``."""
        path = self.sysfs / "class/nvme" / name

        def read(attribute):
            try:
                return (path / attribute).read_text().strip() or None
            except FileNotFoundError:
                return None

        count = read("queue_count")
        return Controller(name=name, transport=read("transport"),
                          address=parse_address(read("address") or ""),
                          state=read("state"), tls_key=read("tls_key"),
                          queue_count=int(count) if count and count.isdigit() else None)

    def reset_controller(self, name):
        """Ask the kernel to reset controller ``name`` (its queues are torn down and
        connected again)."""
        (self.sysfs / "class/nvme" / name / "reset_controller").write_text("1")

    def delete_controller(self, name):
        """Delete one controller (one path) of a subsystem."""
        (self.sysfs / "class/nvme" / name / "delete_controller").write_text("1")

    def every_controller(self):
        """Every NVMe controller of the host, of any subsystem."""
        folder = self.sysfs / "class/nvme"
        names = sorted((p.name for p in folder.iterdir() if _CONTROLLER.fullmatch(p.name)),
                       key=controller_number) if folder.is_dir() else []
        return [self.controller(name) for name in names]

    def controllers(self, nqn):
        """Every controller (path) of subsystem ``nqn``."""
        return [self.controller(name) for name in self._controller_names(nqn)]

    def _namespace_name(self, nqn, nsid):
        subsys = self._subsystem_dir(nqn)
        if subsys is None:
            return None
        # Native multipath: the head disk nvmeXnY sits in the subsystem (its
        # paths nvmeXcYnZ under the controllers); without it, the disk sits
        # under its controller. Names do not follow nsid: read it.
        parents = [subsys, *(self.sysfs / "class/nvme" / name
                             for name in self._controller_names(nqn))]
        disks = [p for parent in parents for p in parent.iterdir() if _DISK.fullmatch(p.name)]
        for disk in sorted(disks):
            with contextlib.suppress(OSError, ValueError):
                if int((disk / "nsid").read_text()) == nsid:
                    return disk.name
        return None

    def namespace_device(self, nqn, nsid=1, timeout=10.0):
        """/dev path of namespace ``nsid`` of ``nqn``, polled for until ``timeout``."""
        name = wait_for(lambda: self._namespace_name(nqn, nsid),
                        f"namespace {nsid} of {nqn} in {self.sysfs}", timeout)
        return f"/dev/{name}"

    def namespace_sectors(self, nqn, nsid=1):
        """512-byte sectors of namespace ``nsid`` of ``nqn`` as the host sees it; None
        while the host has no disk for it (disabled, or being rescanned)."""
        name = self._namespace_name(nqn, nsid)
        with contextlib.suppress(OSError, ValueError):
            return int((self.sysfs / "block" / name / "size").read_text()) if name else None
        return None

    def wait_scanned(self, nqn, nsid=1, timeout=10.0):
        """Wait until the kernel has scanned the partitions of namespace ``nsid`` of
        ``nqn``: a multipath head is scanned by a work item after its first path goes
        live, and a controller deleted under that scan fails its reads ("Buffer I/O error
        ... async page read"). The scan holds the disk's open_mutex from before its first
        read to its end: once a read completed, an open() returns when the scan is over."""
        device = self.namespace_device(nqn, nsid, timeout)
        stat = self.sysfs / "block" / Path(device).name / "stat"
        wait_for(lambda: int(stat.read_text().split()[0]) > 0,
                 f"the partition scan's first read of {device}", timeout)
        os.close(os.open(device, os.O_RDONLY))
        return device

    def path_disks(self, nqn):
        """{controller: its path's hidden disk (nvmeXcYnZ)} of ``nqn`` under native
        multipath: their stat and ana_state are the path's."""
        found = {}
        for name in self._controller_names(nqn):
            disks = sorted(p.name for p in (self.sysfs / "class/nvme" / name).glob("nvme*c*n*"))
            if disks:
                found[name] = disks[0]
        return found

    def ana_state(self, disk):
        """The ANA state of a path (its hidden disk), as the host last read it."""
        return (self.sysfs / "block" / disk / "ana_state").read_text().strip()

    def path_devices(self, nqn, nsid=1, timeout=10.0):
        """/dev paths of namespace ``nsid`` through each controller of ``nqn``: one
        device per path when native multipath is off, waited for on every controller."""
        def find():
            names = self._controller_names(nqn)
            found = []
            for name in names:
                for disk in sorted((self.sysfs / "class/nvme" / name).glob("nvme*n*")):
                    with contextlib.suppress(OSError, ValueError):
                        if _DISK.fullmatch(disk.name) and int((disk / "nsid").read_text()) == nsid:
                            found.append(f"/dev/{disk.name}")
            return found if names and len(found) == len(names) else None
        return wait_for(find, f"namespace {nsid} through every controller of {nqn}", timeout)

    def set_iopolicy(self, nqn, policy):
        """Write the subsystem's multipath iopolicy and return what the kernel reads back."""
        path = self.sysfs / "class/nvme-subsystem" / self.subsystem(nqn) / "iopolicy"
        try:
            path.write_text(policy)
        except OSError as err:
            if err.errno == errno.EINVAL:
                raise IopolicyUnsupported(policy, path) from err
            raise
        current = path.read_text().strip()
        if current != policy:
            raise SetupError(f"{path} reads {current!r} after writing {policy!r}")
        return current

    def iopolicy(self, nqn):
        """The subsystem's current multipath iopolicy."""
        path = self.sysfs / "class/nvme-subsystem" / self.subsystem(nqn) / "iopolicy"
        return path.read_text().strip()


def load_host_modules():
    """Load nvme-fabrics and nvme-tcp, which also carries the mptcp transport
    (early series versions have no module alias for it)."""
    missing = [name for name in ("nvme-fabrics", "nvme-tcp")
               if not requirements.load_module(name)]
    if missing:
        raise SetupError(f"kernel modules not available: {', '.join(missing)}")
