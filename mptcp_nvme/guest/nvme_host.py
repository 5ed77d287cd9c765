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
import uuid
from pathlib import Path

from mptcp_nvme.guest import dhchap, requirements
from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.poll import wait_for

# What a test using this module needs of the kernel and rootfs (plugin.require).
REQUIREMENTS = ("module:nvme_tcp", "kconfig:NVME_MULTIPATH", "tool:nvme")
FABRICS_DEVICE = str(requirements.FABRICS_DEV)
CONNECT_TIMEOUT = 60

_CONTROLLER = re.compile(r"nvme\d+")
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
class DiscoveryRecord:
    """One discovery log entry. Its trtype is left out on purpose: libnvme
    versions that predate a transport print it as "unrecognized"."""

    subtype: str
    subnqn: str
    traddr: str
    trsvcid: str
    adrfam: str
    treq: str
    portid: int


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


def parse_discovery(text):
    """Records of ``nvme discover -o json`` output (nvme-cli 2.x)."""
    try:
        log = json.loads(text)
        return [
            DiscoveryRecord(
                subtype=r["subtype"], subnqn=r["subnqn"], traddr=r["traddr"].strip(),
                trsvcid=r["trsvcid"].strip(), adrfam=r["adrfam"], treq=r["treq"],
                portid=int(r["portid"]),
            )
            for r in log["records"]
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise SetupError(f"unexpected nvme discover output ({err!r}): {text[:200]!r}") from err


def parse_address(text):
    """sysfs ``address`` ("traddr=10.1.1.1,trsvcid=4420,src_addr=10.1.1.2") as a dict."""
    return dict(field.split("=", 1) for field in text.strip().split(",") if "=" in field)


def hostid_for(hostnqn):
    """A stable host id for ``hostnqn``: its own uuid if it is a uuid NQN, else one derived
    from it. The kernel refuses a new hostnqn that reuses its default host's id."""
    _, _, tail = hostnqn.partition(":uuid:")
    try:
        return str(uuid.UUID(tail))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, hostnqn))


# Options of a connection beyond the address, as the kernel's fabrics parser names them
# (nvme-cli's flags are the same names with dashes): True for a flag without a value.
# libnvme 1.x passes the digests for "tcp" only, like tls.
CONNECT_OPTIONS = {"keep_alive_tmo": False, "reconnect_delay": False, "ctrl_loss_tmo": False,
                   "nr_io_queues": False, "nr_write_queues": False, "nr_poll_queues": False,
                   "hdr_digest": True, "data_digest": True,
                   "dhchap_secret": False, "dhchap_ctrl_secret": False, "concat": True}
TCP_ONLY_IN_LIBNVME = ("hdr_digest", "data_digest", "concat")


def fabrics_options(trtype, traddr, trsvcid, nqn, *, hostnqn=None, hostid=None, tls=False,
                    tls_key=None, host_iface=None, options=None):
    """The option string the kernel's fabrics parser takes, in libnvme's order."""
    extra = checked_options(options)
    flags = [name for name, value in extra.items() if CONNECT_OPTIONS[name]]
    options = [("nqn", nqn), ("transport", trtype), ("traddr", traddr),
               ("host_iface", host_iface), ("trsvcid", trsvcid),
               ("hostnqn", hostnqn), ("hostid", hostid), ("tls_key", tls_key),
               *((k, v) for k, v in extra.items() if not CONNECT_OPTIONS[k])]
    fields = [f"{key}={value}" for key, value in options if value is not None] + flags
    if tls:
        fields.append("tls")
    text = ",".join(fields)
    if "\n" in text or any("," in str(value) for _, value in options if value is not None):
        raise UsageError(f"fabrics option values cannot hold ',' or newlines: {text!r}")
    return text


def checked_options(options):
    """``options`` ({CONNECT_OPTIONS name: value}) in CONNECT_OPTIONS' order, flags only
    when true; UsageError naming an unknown one."""
    unknown = sorted(set(options or {}) - set(CONNECT_OPTIONS))
    if unknown:
        raise UsageError(f"unknown connect option(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(CONNECT_OPTIONS)})")
    chosen = {name: options[name] for name in CONNECT_OPTIONS
              if name in (options or {}) and options[name] not in (None, False)}
    for name in ("dhchap_secret", "dhchap_ctrl_secret"):
        if name in chosen:
            dhchap.check_key(chosen[name], name)
    return chosen


def parse_fabrics_reply(text):
    """Controller name from the kernel's "instance=N,cntlid=M" reply."""
    match = re.search(r"(?:^|,)instance=(\d+)", text)
    if not match:
        raise SetupError(f"no instance in the reply of {FABRICS_DEVICE}: {text!r}")
    return f"nvme{match.group(1)}"


class Host:
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
        if not self.nvme_cli_carries(trtype, tls):
            raise SetupError(f"nvme-cli cannot discover over {trtype} with TLS "
                             f"(libnvme adds tls for tcp only) or is not installed")
        argv = [self.nvme, "discover", "-t", trtype, "-a", traddr, "-s", str(trsvcid),
                *self._host_args(), *(["--host-iface", host_iface] if host_iface else []),
                *(["--tls"] if tls else []), "-o", "json"]
        return parse_discovery(self._run(argv))

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
        return sorted(p.name for p in subsys.iterdir() if _CONTROLLER.fullmatch(p.name))

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
        names = sorted(p.name for p in folder.iterdir() if _CONTROLLER.fullmatch(p.name)) \
            if folder.is_dir() else []
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


def native_multipath(sysfs="/sys"):
    """nvme_core's multipath parameter: True (native multipath), False, or None when
    nvme_core is not loaded or the kernel lacks CONFIG_NVME_MULTIPATH."""
    try:
        return Path(sysfs, "module/nvme_core/parameters/multipath").read_text().strip() == "Y"
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def multipath_mode(native, sysfs="/sys"):
    """Native NVMe multipath on or off for the duration: nvme_core is reloaded with
    multipath=Y/N when it differs (it is read-only once loaded), and reloaded as it was
    on exit. No controller may exist meanwhile; nvme_core built in cannot change."""
    load_modules()
    was = native_multipath(sysfs)
    if was is None:
        raise SetupError("nvme_core has no multipath parameter (CONFIG_NVME_MULTIPATH)")
    if was == native:
        yield
        return
    _reload_nvme_core(native, sysfs)
    try:
        yield
    finally:
        _reload_nvme_core(was, sysfs)


def _reload_nvme_core(native, sysfs):
    modules = Path(sysfs, "module")
    if not (modules / "nvme_core/holders").is_dir():
        raise SetupError("nvme_core is built in: boot with nvme_core.multipath=N to turn "
                         "native multipath off")
    controllers = sorted(p.name for p in Path(sysfs, "class/nvme").glob("nvme*"))
    if controllers:
        raise SetupError(f"cannot reload nvme_core with controllers present: {', '.join(controllers)}")
    removed = []

    def remove(name):                 # the modules using it first (nvme_tcp, nvme_fabrics)
        for holder in sorted(p.name for p in (modules / name / "holders").iterdir()):
            if (modules / holder).exists():
                remove(holder)
        proc.cmd(["rmmod", name])
        removed.append(name)
    remove("nvme_core")
    proc.cmd(["modprobe", "nvme_core", f"multipath={'Y' if native else 'N'}"])
    proc.cmd(["modprobe", "-a", *removed[:-1]])
    if native_multipath(sysfs) != native:
        raise SetupError(f"nvme_core reloaded with multipath={'Y' if native else 'N'} but "
                         f"reads {native_multipath(sysfs)}")


def load_modules():
    """Load nvme-fabrics and nvme-tcp, which also carries the mptcp transport
    (early series versions have no module alias for it)."""
    missing = [name for name in ("nvme-fabrics", "nvme-tcp")
               if not requirements.load_module(name)]
    if missing:
        raise SetupError(f"kernel modules not available: {', '.join(missing)}")
