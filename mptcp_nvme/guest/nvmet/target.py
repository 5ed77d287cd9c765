"""The NVMe target (nvmet) through configfs, as mptcp_nvme.sh sets it up.

A Target is a subsystem (allow any host, namespace 1 on a block device) linked
into one port per path. Every resource is a context manager whose cleanup is
registered as soon as the resource exists, so a setup that fails half-way is
still undone, in reverse order.
"""

import contextlib
import errno
import os
import random
from pathlib import Path

from mptcp_nvme.guest.security import dhchap
from mptcp_nvme.guest.checks import requirements
from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.vocabulary import TRTYPES

CONFIGFS_ROOT = requirements.CONFIGFS
# What a test using this module needs of the kernel and rootfs (checks.gates.require).
REQUIREMENTS = ("module:nvmet", "module:nvmet_tcp")
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
WILDCARD_ADDRESSES = {"ipv4": "0.0.0.0", "ipv6": "::"}
TREQS = ("required", "not required")
PORT_IDS = range(20000, 30000)
TRSVCIDS = range(1024, 65536)


class ConfigfsRejected(SetupError):
    """The kernel refused a configfs operation; names the path and the value."""

    def __init__(self, path, value, err):
        self.path = Path(path)
        self.value = value
        self.errno = err.errno
        super().__init__(
            f"{self.path} <- {value!r}: {errno.errorcode.get(err.errno, err.errno)} "
            f"({err.strerror}); see dmesg"
        )


class TransportUnsupported(ConfigfsRejected):
    """addr_trtype refused the transport: this kernel does not know it."""

    @property
    def trtype(self):
        return self.value


class TlsUnsupported(ConfigfsRejected):
    """addr_tsas refused tls1.3 (no NVME_TARGET_TCP_TLS, or not for this transport)."""


# EINVAL on these attributes means a missing kernel feature, not a bad call.
_FEATURE_ATTRIBUTES = {"addr_trtype": TransportUnsupported, "addr_tsas": TlsUnsupported}


def make_nqn(trtype, pid=None, rng=random):
    """The script's NQN: nqn.2014-08.org.nvmexpress.<trtype>dev.<pid>.<random>."""
    pid = os.getpid() if pid is None else pid
    return f"nqn.2014-08.org.nvmexpress.{trtype}dev.{pid}.{rng.randrange(32768)}"


def pick_port_ids(count, taken=(), rng=random):
    """``count`` distinct configfs port ids in 20000-29999, none of them in ``taken``."""
    free = sorted(set(PORT_IDS) - set(taken))
    if count > len(free):
        raise SetupError(f"only {len(free)} free nvmet port ids left, {count} needed")
    return rng.sample(free, count)


def pick_trsvcid(rng=random):
    """One random TCP port in 1024-65535, shared by every path."""
    return rng.choice(TRSVCIDS)


def _check_adrfam(adrfam):
    if adrfam not in WILDCARD_ADDRESSES:
        raise UsageError(f"adrfam must be one of {', '.join(WILDCARD_ADDRESSES)}, not {adrfam!r}")


def address_family(traddr):
    """addr_adrfam of a path address as NVMe uses it (a v4-mapped one is ipv6)."""
    return "ipv6" if ":" in traddr else "ipv4"


def listen_addresses(addresses, adrfam=None):
    """addr_traddr per port: the wildcard of ``adrfam`` (default: the address's family)
    for a single path, else each path's address."""
    if len(addresses) == 1:
        adrfam = adrfam or address_family(addresses[0])
        _check_adrfam(adrfam)
        return [WILDCARD_ADDRESSES[adrfam]]
    return list(addresses)


class Configfs:
    """The five operations nvmet setup needs, under ``root``/nvmet.

    The kernel makes an item's attribute files and default groups on mkdir and
    drops them on rmdir; this class only ever writes attributes, never makes them.
    """

    def __init__(self, root=CONFIGFS_ROOT):
        self.nvmet = Path(root) / "nvmet"

    def mkdir(self, path):
        path.mkdir()

    def rmdir(self, path):
        path.rmdir()

    def symlink(self, target, link):
        link.symlink_to(target)

    def unlink(self, link):
        link.unlink()

    def read(self, path):
        """An attribute's value, stripped."""
        return Path(path).read_text().strip()

    def write_file(self, path, value):
        """One write(2), opened like the shell's ``echo value > attribute``."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def write(self, path, value):
        """Write one attribute; a refusal raises ConfigfsRejected (or a feature subclass)."""
        try:
            self.write_file(path, value)
        except OSError as err:
            rejected = ConfigfsRejected
            if err.errno == errno.EINVAL:
                rejected = _FEATURE_ATTRIBUTES.get(Path(path).name, ConfigfsRejected)
            raise rejected(path, value, err) from err


def _make_dir(configfs, stack, path):
    configfs.mkdir(path)
    stack.callback(configfs.rmdir, path)


def _make_link(configfs, stack, target, link):
    configfs.symlink(target, link)
    stack.callback(configfs.unlink, link)


class _Resource:
    """Context-manager plumbing: ``_setup(stack)`` registers its own undo steps."""

    def __enter__(self):
        with contextlib.ExitStack() as stack:
            self._setup(stack)
            self._cleanup = stack.pop_all()
        return self

    def __exit__(self, *exc_info):
        self._cleanup.close()


class Subsystem(_Resource):
    """A subsystem with namespace ``nsid`` on ``device``, open to ``allowed_hosts`` or any
    host. ``allowed_hosts`` may map each host NQN to attributes of its nvmet host entry
    (e.g. dhchap_key, dhchap_ctrl_key, dhchap_hash, dhchap_dhgroup).
    ``namespace_attributes`` are written to each namespace before it is enabled (e.g.
    device_nguid, resv_enable)."""

    def __init__(self, configfs, nqn, device, nsid=1, allowed_hosts=(), namespace_attributes=None):
        self.namespace_attributes = dict(namespace_attributes or {})
        self.configfs = configfs
        self.nqn = nqn
        self.device = str(device)
        self.nsid = nsid
        self.host_attributes = (dict(allowed_hosts) if isinstance(allowed_hosts, dict)
                                else dict.fromkeys(allowed_hosts, {}))
        for attributes in self.host_attributes.values():
            dhchap.check_host_attributes(attributes)
        self.allowed_hosts = tuple(self.host_attributes)
        self.path = configfs.nvmet / "subsystems" / nqn

    def _setup(self, stack):
        cfs = self.configfs
        _make_dir(cfs, stack, self.path)
        cfs.write(self.path / "attr_allow_any_host", "0" if self.allowed_hosts else "1")
        for hostnqn in self.allowed_hosts:
            host = cfs.nvmet / "hosts" / hostnqn
            if not host.exists():
                _make_dir(cfs, stack, host)
            for name, value in self.host_attributes[hostnqn].items():
                self.set_host_attribute(hostnqn, name, value)
            _make_link(cfs, stack, host, self.path / "allowed_hosts" / hostnqn)
        self._add_namespace(stack, self.nsid, self.device)

    def _add_namespace(self, stack, nsid, device):
        cfs = self.configfs
        namespace = self.namespace_path(nsid)
        _make_dir(cfs, stack, namespace)
        cfs.write(namespace / "device_path", str(device))
        for name, value in self.namespace_attributes.items():
            cfs.write(namespace / name, value)
        cfs.write(namespace / "enable", "1")
        stack.callback(self.enable_namespace, nsid, False)

    def namespace_path(self, nsid=1):
        return self.path / "namespaces" / str(nsid)

    def enable_namespace(self, nsid, enable=True):
        """Enable or disable namespace ``nsid`` (the host sees it come or go)."""
        self.configfs.write(self.namespace_path(nsid) / "enable", "1" if enable else "0")

    def remap_namespace(self, nsid, device):
        """Namespace ``nsid`` on ``device`` from now on: disabled, its device_path
        changed, enabled again."""
        self.enable_namespace(nsid, False)
        self.configfs.write(self.namespace_path(nsid) / "device_path", str(device))
        self.enable_namespace(nsid, True)

    def add_namespace(self, nsid, device):
        """Namespace ``nsid`` on ``device`` (block device or file) besides the first;
        disabled and removed with the subsystem."""
        self._add_namespace(self._cleanup, nsid, device)

    def set_host_attribute(self, hostnqn, name, value):
        """One attribute of an allowed host's nvmet entry (a new DH-HMAC-CHAP key...)."""
        dhchap.check_host_attributes({name: value})
        self.configfs.write(self.configfs.nvmet / "hosts" / hostnqn / name, value)


ANA_STATES = ("optimized", "non-optimized", "inaccessible", "persistent-loss", "change")


class Port(_Resource):
    """One nvmet port; ``link()`` exports a subsystem on it, which starts the listener."""

    def __init__(self, configfs, port_id, trtype, traddr, trsvcid, adrfam="ipv4",
                 tls=False, treq=None):
        if trtype not in TRTYPES:
            raise UsageError(f"trtype must be one of {', '.join(TRTYPES)}, not {trtype!r}")
        _check_adrfam(adrfam)
        if treq is not None and (not tls or treq not in TREQS):
            raise UsageError(f"treq needs tls and one of {TREQS}, got {treq!r}")
        if int(trsvcid) not in range(1, 65536):
            raise UsageError(f"trsvcid must be a TCP port, not {trsvcid!r}")
        self.configfs = configfs
        self.port_id = port_id
        self.trtype = trtype
        self.traddr = traddr
        self.trsvcid = int(trsvcid)
        self.adrfam = adrfam
        self.tls = tls
        self.treq = treq
        self.path = configfs.nvmet / "ports" / str(port_id)

    def _setup(self, stack):
        _make_dir(self.configfs, stack, self.path)
        attributes = [
            ("addr_trtype", self.trtype),
            ("addr_adrfam", self.adrfam),
            ("addr_traddr", self.traddr),
            ("addr_trsvcid", str(self.trsvcid)),
        ]
        if self.tls:
            attributes.append(("addr_tsas", "tls1.3"))  # treq becomes "required"
        if self.treq:
            attributes.append(("addr_treq", self.treq))
        for name, value in attributes:
            self.configfs.write(self.path / name, value)

    def set_ana_state(self, state, group=1):
        """The ANA state of ``group`` (1: every namespace's default) through this port."""
        if state not in ANA_STATES:
            raise UsageError(f"ANA state must be one of {', '.join(ANA_STATES)}, not {state!r}")
        self.configfs.write(self.path / "ana_groups" / str(group) / "ana_state", state)

    def link(self, subsystem, in_target_netns=contextlib.nullcontext, stack=None):
        """Export ``subsystem``; the kernel opens the listener in the caller's netns. The
        unlink goes on ``stack`` (default: this port's exit), which must close before
        the subsystem's."""
        link = self.path / "subsystems" / subsystem.nqn
        with in_target_netns():
            try:
                self.configfs.symlink(subsystem.path, link)
            except OSError as err:
                raise ConfigfsRejected(link, str(subsystem.path), err) from err
        (stack or self._cleanup).callback(self._unlink, link)

    def _unlink(self, link):
        if os.path.lexists(link):          # unexported() may have left it out
            self.configfs.unlink(link)

    @contextlib.contextmanager
    def unexported(self, subsystem, in_target_netns=contextlib.nullcontext):
        """``subsystem`` taken off this port for the block (nvmet drops its controllers
        there and the listener goes), exported again on exit."""
        link = self.path / "subsystems" / subsystem.nqn
        self.configfs.unlink(link)
        try:
            yield self
        finally:
            with in_target_netns():
                try:
                    self.configfs.symlink(subsystem.path, link)
                except OSError as err:
                    raise ConfigfsRejected(link, str(subsystem.path), err) from err


class Target(_Resource):
    """mptcp_nvme.sh's target: one subsystem exported on one port per path address.

    ``addresses`` are the target's per-path addresses; with a single path the
    port listens on the wildcard address instead. Each port's adrfam is ``adrfam``, by
    default its address's own (a topology may mix IPv4 and IPv6 links). ``in_target_netns`` is a
    context-manager factory entered around each link (where the listener is
    created). Unset nqn, trsvcid and port ids are drawn at random.
    """

    def __init__(self, device, trtype, addresses, *, nqn=None, trsvcid=None, port_ids=None,
                 adrfam=None, tls=False, treq=None, allowed_hosts=(), namespace_attributes=None,
                 in_target_netns=contextlib.nullcontext, configfs=None):
        if not addresses:
            raise UsageError("a target needs at least one path address")
        configfs = configfs or Configfs()
        if port_ids is None:
            port_ids = pick_port_ids(len(addresses), taken=_port_ids_in_use(configfs))
        elif len(port_ids) != len(addresses):
            raise UsageError(f"{len(addresses)} paths but {len(port_ids)} port ids")
        self.trtype = trtype
        self.addresses = tuple(addresses)
        self.nqn = nqn or make_nqn(trtype)
        self.trsvcid = trsvcid or pick_trsvcid()
        self.in_target_netns = in_target_netns
        self.subsystem = Subsystem(configfs, self.nqn, device, allowed_hosts=allowed_hosts,
                                   namespace_attributes=namespace_attributes)
        self.ports = [
            Port(configfs, port_id, trtype, traddr, self.trsvcid,
                 adrfam=adrfam or address_family(path), tls=tls, treq=treq)
            for port_id, traddr, path in zip(port_ids, listen_addresses(self.addresses, adrfam),
                                             self.addresses)
        ]

    def _setup(self, stack):
        stack.enter_context(self.subsystem)
        for port in self.ports:
            stack.enter_context(port)
            port.link(self.subsystem, self.in_target_netns)

    def another_port(self, trsvcid=None):
        """A Port beside this target's (its first address and trtype, a free port id, a
        trsvcid of its own unless given), not yet made: enter it, link() a subsystem."""
        first = self.ports[0]
        port_id, = pick_port_ids(1, taken=_port_ids_in_use(first.configfs))
        return Port(first.configfs, port_id, self.trtype, first.traddr,
                    trsvcid or pick_trsvcid(), adrfam=first.adrfam)

    def add_subsystem(self, nqn, device, allowed_hosts=()):
        """Another subsystem (namespace 1 on ``device``) on the same ports; taken off
        them and removed first when the target goes."""
        subsystem = self._cleanup.enter_context(
            Subsystem(self.subsystem.configfs, nqn, device, allowed_hosts=allowed_hosts))
        for port in self.ports:
            port.link(subsystem, self.in_target_netns, stack=self._cleanup)
        return subsystem


def device_size(device):
    """Bytes of a block device or file (what nvmet exports as the namespace)."""
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _port_ids_in_use(configfs):
    return {int(p.name) for p in (configfs.nvmet / "ports").iterdir() if p.name.isdigit()}


def _run(argv):
    return proc.cmd(argv).stdout


def load_target_modules():
    """Load nvmet and nvmet-tcp (home of the mptcp transport too), mount configfs if needed.

    nvmet-tcp is loaded explicitly: early series versions have no module alias
    for transport 4, so writing ``mptcp`` would not pull it in.
    """
    missing = [name for name in ("nvmet", "nvmet-tcp") if not requirements.load_module(name)]
    if missing:
        raise SetupError(f"kernel modules not available: {', '.join(missing)}")
    if not requirements.mount_configfs():
        raise SetupError(f"cannot mount configfs on {CONFIGFS_ROOT}")
