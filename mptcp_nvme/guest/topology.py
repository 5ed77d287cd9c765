"""Two network namespaces joined by veth paths, as in mptcp_nvme.sh.

A topology file is TOML; only ``[[link]]`` is required, defaults are the script's::

    description = "what this topology is for"
    family = "ipv4"                # default family of the links: ipv4 | ipv6 | v4map

    [target]                       # the NVMe target side, "ns1" in the script
    namespace = "ns1"              # netns name prefix; build() adds a unique suffix
    subflows = 8                   # MPTCP limits, 0..8
    add_addr_accepted = 8
    endpoint_flags = ["signal"]    # signal|subflow|backup|fullmesh; [] = no endpoints
    source_routes = false          # a routing table per link for its source address
    init_netns = false             # host only: its ends in the initial netns, where
                                   # NVMe/TCP opens a reconnect's sockets (faults)

    [host]                         # the NVMe host side: "ns2", 8, 8, ["subflow"], true

    [[link]]                       # veth pair i = 1, 2, ... (at most 8)
    name = "path1"                 # default path<i>
    family = "ipv4"                # default the top-level family
    target_addr = "10.1.1.1/24"    # default 10.1.<i>.1/24 or dead:beef:<i>::1/64
    host_addr = "10.1.1.2/24"      # default 10.1.<i>.2/24 or dead:beef:<i>::2/64
    rate = "1000mbit"              # netem on both ends: bit|kbit|mbit|gbit,
    delay = "5ms"                  # s|ms|us, ...
    jitter = "1ms"
    loss = "0.5%"

What an MPTCP connection made over link L joins, with the in-kernel path manager, on
every kernel measured (7.3.4 Debian and the test kernel; selftests/test_families.py
asserts it, mixed-family.toml is the example): its initial subflow on L; a subflow from
each other host link with a "subflow" endpoint to L's target address, only from links of
L's IP version (IPv4 and v4map are one version, IPv6 the other); and a subflow to each
other target address announced by a "signal" endpoint, whatever its version, from the
host link of that address's subnet, where the target listens on that address and port
(nvmet: a port per link, one trsvcid). So on 2 ipv6 + 1 v4map links, a connection over
an ipv6 link has subflows on all three, the v4map one joined only through its announced
address; a connection over the v4map link has none from the ipv6 endpoints to it.
(expected_subflows() gives these pairs.)

Interfaces are ns1eth<i> (target) and ns2eth<i> (host); the host has a default route via
each target address with metric 100 + i (the script's 10$i). v4map links carry IPv4
addresses that applications use as IPv4-mapped IPv6 (::ffff:10.1.<i>.1).

Source routes (on by default on the host side, a deviation from the script): a policy
rule per link sends whatever has that link's address as its source out of that link
(table 100 + i, default via the peer's address). The host's subflow endpoints join
towards the address the connection was made to, 10.1.1.1 for the first path; without
these rules every such subflow's host->target bytes leave by link 1 (routing looks at
the destination only), so NVMe writes over MPTCP would not spread while reads do. With
them, each subflow uses the link of its host address in both directions.
"""

import ipaddress
import os
import re
import secrets
import socket
import tomllib
from collections import namedtuple
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from pyroute2 import IPRoute, MPTCP
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_TENTATIVE
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg

from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.poll import wait_for

TOPOLOGY_DIR = Path(__file__).resolve().parents[2] / "topologies"
FAMILIES = ("ipv4", "ipv6", "v4map")
MAX_LINKS = 8  # MPTCP_PM_ADDR_MAX: endpoints per namespace
# What a test using this module needs of the kernel and rootfs (plugin.require).
REQUIREMENTS = ("kconfig:VETH", "kconfig:NET_SCH_NETEM", "kconfig:MPTCP", "tool:nsenter")
ENDPOINT_FLAGS = {"signal": 1, "subflow": 2, "backup": 4, "fullmesh": 8}


def requirements(topology):
    """What building ``topology`` needs beyond REQUIREMENTS: IPv6 source routes are
    policy rules, which need CONFIG_IPV6_MULTIPLE_TABLES (EAFNOSUPPORT without)."""
    ipv6 = any(link.host_addr.version == 6 for link in topology.links)
    routed = topology.host.source_routes or topology.target.source_routes
    return ("kconfig:IPV6_MULTIPLE_TABLES",) if ipv6 and routed else ()
SCRIPT_RATE, SCRIPT_DELAY, SCRIPT_LOSS = "1000mbit", "5ms", "0.5%"
SCRIPT_LINKS = 4   # mptcp_nvme.sh always builds 4 links; its path argument sets the connections

_NAME = re.compile(r"\w[\w.-]{0,31}", re.ASCII)
_NUMBER_UNIT = re.compile(r"(\d+(?:\.\d+)?)([a-z%]+)")
_TIME = ({"s": 10**6, "ms": 10**3, "us": 1}, "a time like '5ms'", 2**28)  # u32 ticks of 64ns
_NETEM_PARAMS = {  # param: (Netem field, {unit: factor}, example, maximum)
    "rate": ("rate_bit", {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9},
             "a rate like '1000mbit'", 8 * (2**32 - 1)),  # netem's u32 bytes/s
    "delay": ("delay_us", *_TIME),
    "jitter": ("jitter_us", *_TIME),
    "loss": ("loss_pct", {"%": 1}, "a percentage like '0.5%'", 100),
}


def _parse_netem_value(param, text):
    """'1000mbit' -> bit/s, '5ms' -> us, '0.5%' -> percent; ValueError if bad."""
    _, units, example, maximum = _NETEM_PARAMS[param]
    match = _NUMBER_UNIT.fullmatch(text.lower()) if isinstance(text, str) else None
    if not match or match[2] not in units:
        raise ValueError(f"expected {example}, not {text!r}")
    value = float(match[1]) * units[match[2]]
    if value > maximum:
        raise ValueError(f"{text!r} is too large")
    return value if param == "loss" else round(value)


@dataclass(frozen=True)
class Netem:
    """netem parameters of one veth end; all zero means no netem qdisc."""

    rate_bit: int = 0
    delay_us: int = 0
    jitter_us: int = 0
    loss_pct: float = 0.0

    @classmethod
    def parse(cls, base=None, **texts):
        """Netem from tc-style strings (rate=, delay=, jitter=, loss=), the rest from
        ``base``; ValueError for a bad string."""
        return replace(base or cls(), **{
            _NETEM_PARAMS[param][0]: _parse_netem_value(param, text)
            for param, text in texts.items() if text is not None})

    def options(self):
        """TCA_OPTIONS for pyroute2's netem encoder (rate in bytes/s, times in us)."""
        return sched_netem.get_parameters({"rate": self.rate_bit // 8, "delay": self.delay_us,
                                           "jitter": self.jitter_us, "loss": self.loss_pct})


@dataclass(frozen=True)
class Side:
    """One end of every link: netns name prefix and MPTCP path manager setup."""

    namespace: str
    subflows: int = 8
    add_addr_accepted: int = 8
    endpoint_flags: tuple = ()
    source_routes: bool = False
    init_netns: bool = False       # host only: its ends in the initial netns (see build())


SCRIPT_TARGET = Side("ns1", endpoint_flags=("signal",))
SCRIPT_HOST = Side("ns2", endpoint_flags=("subflow",), source_routes=True)


@dataclass(frozen=True)
class Link:
    """Veth pair number ``index`` (1-based)."""

    index: int
    name: str
    family: str
    target_addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    host_addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    netem: Netem = Netem()

    target_ifname = property(lambda self: f"ns1eth{self.index}")
    host_ifname = property(lambda self: f"ns2eth{self.index}")
    route_metric = property(lambda self: 100 + self.index)
    # As NVMe and other applications use them: v4map means IPv6 sockets, ::ffff:a.b.c.d.
    adrfam = property(lambda self: "ipv4" if self.family == "ipv4" else "ipv6")
    traddr = property(lambda self: self._as_used(self.target_addr))
    host_traddr = property(lambda self: self._as_used(self.host_addr))

    def _as_used(self, interface):
        return f"{'::ffff:' if self.family == 'v4map' else ''}{interface.ip}"


@dataclass(frozen=True)
class Topology:
    description: str
    target: Side
    host: Side
    links: tuple

    @property
    def traddrs(self):
        """The target's address on every link, as NVMe and sockets use them."""
        return [link.traddr for link in self.links]


def default_addresses(index, family):
    """The script's addressing of link ``index``: (target, host) interfaces."""
    pattern = f"dead:beef:{index}::{{}}/64" if family == "ipv6" else f"10.1.{index}.{{}}/24"
    return tuple(ipaddress.ip_interface(pattern.format(host)) for host in (1, 2))


# The seed's loss effect: tcp 4 round-robin kept 106 of its 456 MiB/s under loss=1.
SEED_LOSS_SHARE = 106 / 456


def loss_profile(rate_bit, flows=2):
    """netem (delay, loss) of the script's loss=1 on links of ``rate_bit``, and why.

    At the script's 1000mbit: its own 5 ms and 0.5 %. On slower links the same profile
    caps nothing (one TCP flow's loss-limited rate, MSS/RTT * 1.22/sqrt(p) after Mathis
    et al., is ~20 Mbit/s: two thirds of a 30mbit link). Scaled: loss kept, and a delay
    at which the ``flows`` TCP connections of one NVMe/TCP controller (its I/O queues, one
    per guest CPU) together reach the share of their link that tcp round-robin kept under
    loss in the seed (106 of 456 MiB/s, SEED_LOSS_SHARE).
    """
    script = Netem.parse(rate=SCRIPT_RATE, delay=SCRIPT_DELAY, loss=SCRIPT_LOSS)
    if rate_bit == script.rate_bit:
        delay_us = script.delay_us
    else:
        target = SEED_LOSS_SHARE * rate_bit / flows          # bit/s per flow
        rtt_s = _flow_limit_bit(10**6, script.loss_pct) / target
        delay_us = round(rtt_s * 10**6 / 2)                  # netem on both ends
    limit = flows * _flow_limit_bit(2 * delay_us, script.loss_pct)
    note = (f"loss=1 at {rate_bit / 1e6:g}mbit: delay {delay_us / 1000:.3g}ms loss "
            f"{script.loss_pct:g}% on both ends (the script's {SCRIPT_DELAY} {SCRIPT_LOSS} are "
            f"for {SCRIPT_RATE}): {flows} TCP flows' loss-limited rate {limit / 1e6:.3g} Mbit/s, "
            f"{100 * limit / rate_bit:.0f}% of a link (the seed's tcp round-robin kept "
            f"{100 * SEED_LOSS_SHARE:.0f}% under loss)")
    return Netem(rate_bit=rate_bit, delay_us=delay_us, loss_pct=script.loss_pct), note


def _flow_limit_bit(rtt_us, loss_pct, mss=1448):
    """Mathis et al.: MSS/RTT * 1.22/sqrt(p), bit/s."""
    return mss * 8 / (rtt_us / 1e6) * 1.22 / (loss_pct / 100) ** 0.5


def script_topology(paths, loss=False, family="ipv4", rate=None, flows=None):
    """mptcp_nvme.sh's topology for its ``path`` argument: SCRIPT_LINKS links whatever
    ``paths`` is (more when it asks for more); options as topology_for_paths."""
    return topology_for_paths(max(SCRIPT_LINKS, paths), loss, family, rate, flows)


def topology_for_paths(paths, loss=False, family="ipv4", rate=None, flows=None):
    """mptcp_nvme.sh's topology with ``paths`` veth pairs at ``rate`` (None: the
    script's; its loss=1 adds delay and loss, scaled to the rate for ``flows`` I/O queues
    per controller, by default one per CPU: loss_profile)."""
    rate = rate or SCRIPT_RATE
    if type(paths) is not int or not 1 <= paths <= MAX_LINKS:
        raise UsageError(f"paths: must be 1..{MAX_LINKS}, not {paths!r}")
    if family not in FAMILIES:
        raise UsageError(f"family: must be one of {', '.join(FAMILIES)}, not {family!r}")
    netem = Netem.parse(rate=rate)
    if loss:
        netem, _ = loss_profile(netem.rate_bit, flows or os.cpu_count())
    links = tuple(Link(i, f"path{i}", family, *default_addresses(i, family), netem)
                  for i in range(1, paths + 1))
    pairs = "veth pair" if paths == 1 else "veth pairs"
    described = f"rate {rate}"
    if loss:
        described += f" delay {netem.delay_us / 1000:.3g}ms loss {netem.loss_pct:g}%"
    return Topology(f"mptcp_nvme.sh: {paths} {pairs} ({family}), netem {described}",
                    SCRIPT_TARGET, SCRIPT_HOST, links)


def _ip_version(link):
    return 6 if link.family == "ipv6" else 4


def expected_subflows(topology, initial):
    """The subflows an MPTCP connection over link ``initial`` gets with this topology's
    endpoints, as sorted (host link name, target link name) pairs: the rules in this
    module's docstring, up to the host's subflow limit and add_addr_accepted."""
    pairs = [(initial.name, initial.name)]
    others = [link for link in topology.links if link is not initial]
    joins = []
    if "subflow" in topology.host.endpoint_flags:
        joins += [(link.name, initial.name) for link in others
                  if _ip_version(link) == _ip_version(initial)]
    announced = []
    if "signal" in topology.target.endpoint_flags:
        announced = [(link.name, link.name) for link in others]
        announced = announced[:topology.host.add_addr_accepted]
    joins = (joins + announced)[:min(topology.host.subflows, topology.target.subflows)]
    return sorted(pairs + joins)


def with_rate(topology, rate):
    """``topology`` with the netem rate of every link set to ``rate`` (e.g. "50mbit")."""
    links = tuple(replace(link, netem=Netem.parse(link.netem, rate=rate))
                  for link in topology.links)
    return replace(topology, links=links, description=f"{topology.description}, {rate} per link")


def scaled_to(topology, rate):
    """``topology`` with its fastest link at ``rate`` and the others in proportion (the
    matrix keeps a file's asymmetry where TCG can carry it); unshaped links get ``rate``."""
    top = Netem.parse(rate=rate).rate_bit
    fastest = max((link.netem.rate_bit for link in topology.links), default=0) or top
    links = tuple(replace(link, netem=replace(
        link.netem, rate_bit=round((link.netem.rate_bit or fastest) * top / fastest)))
        for link in topology.links)
    return replace(topology, links=links,
                   description=f"{topology.description}, scaled to {rate} for the fastest link")


def load_topology(path):
    """Parse and validate a topology file; bad input raises a one-line UsageError."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: invalid TOML: {err}") from None
    try:
        return _topology(data)
    except _KeyProblem as problem:
        key, message = problem.args
        raise UsageError(f"{path}: {key}: {message}") from None


class _KeyProblem(Exception):
    """(key, problem) found while validating a parsed file."""


def _check(condition, key, message):
    if not condition:
        raise _KeyProblem(key, message)


def _table(data, key, allowed):
    _check(isinstance(data, dict), key, "must be a table")
    for name in data:
        _check(name in allowed, f"{key}.{name}" if key else name, "unknown key")


def _value(data, key, prefix, default, valid, expected):
    value = data.get(key, default)
    _check(valid(value), prefix + key, f"must be {expected}, not {value!r}")
    return value


# (valid(value), what a valid value is) for _value()
_STRING = (lambda value: isinstance(value, str), "a string")
_FAMILY = (FAMILIES.__contains__, f"one of {', '.join(FAMILIES)}")
_LIMIT = (lambda value: type(value) is int and 0 <= value <= 8, "an integer 0..8")
_FLAGS = (lambda flags: isinstance(flags, list) and all(f in tuple(ENDPOINT_FLAGS) for f in flags),
          f"a list of {', '.join(ENDPOINT_FLAGS)}")
_NAMESPACE = (lambda name: isinstance(name, str) and _NAME.fullmatch(name),
              "1..32 letters, digits, '_', '.', '-'")
_BOOL = (lambda value: isinstance(value, bool), "true or false")


def _topology(data):
    _table(data, "", {"description", "family", "target", "host", "link"})
    description = _value(data, "description", "", "", *_STRING)
    family = _value(data, "family", "", "ipv4", *_FAMILY)
    target = _side(data.get("target", {}), "target", SCRIPT_TARGET)
    host = _side(data.get("host", {}), "host", SCRIPT_HOST)
    _check(target.namespace != host.namespace, "host.namespace", "same as target.namespace")
    _check(not target.init_netns, "target.init_netns", "only the host side may use it")
    tables = data.get("link", [])
    _check(isinstance(tables, list), "link", "must be an array of tables ([[link]])")
    _check(1 <= len(tables) <= MAX_LINKS, "link",
           f"need 1..{MAX_LINKS} [[link]] tables, not {len(tables)}")
    links = []
    for index, table in enumerate(tables, start=1):
        links.append(_link(table, index, family, links))
    return Topology(description, target, host, tuple(links))


def _side(data, key, default):
    _table(data, key, vars(default).keys())
    prefix = key + "."
    return Side(_value(data, "namespace", prefix, default.namespace, *_NAMESPACE),
                _value(data, "subflows", prefix, default.subflows, *_LIMIT),
                _value(data, "add_addr_accepted", prefix, default.add_addr_accepted, *_LIMIT),
                tuple(dict.fromkeys(_value(data, "endpoint_flags", prefix,
                                           list(default.endpoint_flags), *_FLAGS))),
                _value(data, "source_routes", prefix, default.source_routes, *_BOOL),
                _value(data, "init_netns", prefix, default.init_netns, *_BOOL))


def _link(data, index, default_family, previous):
    prefix = f"link[{index}]."
    _table(data, prefix[:-1], {"name", "family", "target_addr", "host_addr", *_NETEM_PARAMS})
    name = _value(data, "name", prefix, f"path{index}", *_STRING)
    _check(name not in (other.name for other in previous), prefix + "name",
           f"duplicate link name {name!r}")
    family = _value(data, "family", prefix, default_family, *_FAMILY)
    target, host = default_addresses(index, family)
    target = _address(data, "target_addr", prefix, family, target)
    host = _address(data, "host_addr", prefix, family, host)
    _check(host.ip != target.ip, prefix + "host_addr", "same as target_addr")
    _check(host.ip in target.network, prefix + "host_addr",
           f"{host.ip} is not in target_addr's subnet {target.network}")
    for other in previous:
        for key, address in (("target_addr", target), ("host_addr", host)):
            _check(address.ip not in (other.target_addr.ip, other.host_addr.ip), prefix + key,
                   f"duplicate address {address.ip} (also on link[{other.index}])")
        _check(not target.network.overlaps(other.target_addr.network), prefix + "target_addr",
               f"{target} overlaps link[{other.index}]'s subnet {other.target_addr.network}")
    netem = Netem()
    for param in _NETEM_PARAMS.keys() & data.keys():
        try:
            netem = Netem.parse(netem, **{param: data[param]})
        except ValueError as err:
            raise _KeyProblem(prefix + param, str(err)) from None
    return Link(index, name, family, target, host, netem)


def _address(data, key, prefix, family, default):
    if key not in data:
        return default
    text = _value(data, key, prefix, None, *_STRING)
    try:
        address = ipaddress.ip_interface(text)
    except ValueError:
        raise _KeyProblem(prefix + key, f"bad address {text!r}") from None
    wanted = 6 if family == "ipv6" else 4
    _check(address.version == wanted, prefix + key,
           f"{family} link needs an IPv{wanted} address, not {text!r}")
    if "/" not in text:
        address = ipaddress.ip_interface(f"{text}/{default.network.prefixlen}")
    return address


LinkCounters = namedtuple("LinkCounters", "tx_bytes rx_bytes")


@dataclass(frozen=True)
class LinkBytes:
    """The one definition of "bytes per link": what each link carried between two
    Network.link_counters() snapshots, counted on its host-side interface. ``rx`` is
    target->host (NVMe reads), ``tx`` host->target (writes); keys are link names."""

    rx: dict
    tx: dict

    @classmethod
    def between(cls, links, before, after):
        return cls({l.name: after[l.index].rx_bytes - before[l.index].rx_bytes for l in links},
                   {l.name: after[l.index].tx_bytes - before[l.index].tx_bytes for l in links})

    def of(self, direction="both"):
        """{link name: bytes} in ``direction``: "rx", "tx" or "both"."""
        if direction == "both":
            return {name: self.rx[name] + self.tx[name] for name in self.rx}
        return dict(self.rx if direction == "rx" else self.tx)

    def shares(self, direction="both"):
        """{link name: fraction of all the bytes in ``direction``}."""
        moved = self.of(direction)
        total = sum(moved.values()) or 1
        return {name: count / total for name, count in moved.items()}

    def format(self, direction="both", shares=True):
        """'path1=25% path2=25% ...' (or byte counts)."""
        values = self.shares(direction) if shares else self.of(direction)
        return " ".join(f"{name}={value:.0%}" if shares else f"{name}={value}"
                        for name, value in values.items())


class Netns:
    """A named network namespace, /run/netns/NAME (or ``path``)."""

    def __init__(self, name, path=None):
        self.name = name
        self.path = path or f"/run/netns/{name}"

    def argv(self):
        """Prefix that runs a command in this namespace."""
        return ["nsenter", f"--net={self.path}"]

    @contextmanager
    def enter(self):
        """Move the calling thread (and what it starts) into this namespace for the block."""
        with open("/proc/thread-self/ns/net", "rb") as home:
            pyroute2_netns.setns(self.path, flags=0)
            try:
                yield self
            finally:
                pyroute2_netns.setns(home.fileno(), flags=0)

    def iproute(self):
        """An IPRoute socket bound to this namespace."""
        with self.enter():
            return IPRoute()

    def mptcp(self):
        """An MPTCP path manager socket bound to this namespace."""
        with self.enter():
            return MPTCP()

    def sysctl(self, key, value):
        with self.enter(), open(f"/proc/sys/{key.replace('.', '/')}", "w") as file:
            file.write(f"{value}\n")


# The VM's initial network namespace. NVMe/TCP opens the sockets of a reconnect (after
# error recovery or a reset) from a kernel worker, in this namespace whatever the one the
# controller was created in: a host side that must reconnect lives here.
INIT_NETNS = Netns("init", "/proc/1/ns/net")


@contextmanager
def _step(what):
    """Turn a kernel refusal into a one-line SetupError naming the step."""
    try:
        yield
    except (NetlinkError, OSError) as err:
        raise SetupError(f"{what}: {err}") from err


@contextmanager
def _created_netns(name):
    with _step(f"creating netns {name}"):
        pyroute2_netns.create(name)
    try:
        yield Netns(name)
    finally:
        pyroute2_netns.remove(name)


@dataclass(frozen=True)
class _End:
    """The target or the host end of every link, during the build."""

    ns: Netns
    ipr: IPRoute
    side: Side
    is_host: bool

    def ifname(self, link):
        return link.host_ifname if self.is_host else link.target_ifname

    def address(self, link):
        return link.host_addr if self.is_host else link.target_addr

    def ifindex(self, ifname):
        return self.ipr.link_lookup(ifname=ifname)[0]


class Network:
    """A built topology: its two namespaces and live controls over its links."""

    def __init__(self, topology, target, host):
        self.topology = topology
        self.target = target
        self.host = host
        self.netem = {link.index: link.netem for link in topology.links}

    def set_netem(self, link_index, rate=None, delay=None, jitter=None, loss=None):
        """Change netem on both ends of a live link (tc-style strings; unset ones kept)."""
        netem = Netem.parse(self.netem[link_index], rate=rate, delay=delay,
                            jitter=jitter, loss=loss)
        link = self.topology.links[link_index - 1]
        for ns, ifname in ((self.target, link.target_ifname), (self.host, link.host_ifname)):
            with ns.iproute() as ipr:
                _apply_netem(ipr, ns, ifname, netem)
        self.netem[link_index] = netem
        return netem

    def set_link_up(self, link_index, up):
        """Set the host end of a live link administratively down, or up again. The kernel
        drops the routes through a link that goes down; up restores the host's default
        and source routes of that link, as a network manager would, once it is up."""
        link = self.topology.links[link_index - 1]
        with self.host.iproute() as ipr, _step(f"{link.host_ifname} {'up' if up else 'down'}"):
            ipr.link("set", index=ipr.link_lookup(ifname=link.host_ifname)[0],
                     state="up" if up else "down")
        if not up:
            return
        with self.host.iproute() as ipr:
            end = _End(self.host, ipr, self.topology.host, True)
            wait_for(lambda: _ready([link], end), f"{link.host_ifname} up again")
            _add_default_route(link, end, "replace")
            if end.side.source_routes:
                _add_source_route(link, end, "replace")

    def endpoint(self, link_index, present):
        """Remove the host's MPTCP endpoint of a link (its subflows close), or add it
        again with the topology's flags (the path manager joins subflows from it)."""
        link = self.topology.links[link_index - 1]
        ip = link.host_addr.ip
        with self.host.mptcp() as mptcp, _step(f"MPTCP endpoint {ip} "
                                               f"{'added' if present else 'removed'}"):
            if present:
                _add_endpoint(mptcp, self.topology.host, ip)
                return
            found = _endpoint_id(mptcp, ip)
            if found is None:
                raise SetupError(f"no MPTCP endpoint {ip} in {self.host.name}")
            mptcp.endpoint("del", id=found)

    def link_bytes_since(self, before):
        """LinkBytes from the ``before`` snapshot (link_counters()) to now."""
        return LinkBytes.between(self.topology.links, before, self.link_counters())

    def link_counters(self):
        """{link index: byte counters of its host-side interface}."""
        with self.host.iproute() as ipr:
            stats = {msg.get("ifname"): msg.get("stats64") for msg in ipr.get_links()}
        return {link.index: LinkCounters(stats[link.host_ifname]["tx_bytes"],
                                         stats[link.host_ifname]["rx_bytes"])
                for link in self.topology.links}


def _netem_message(ifindex, netem):
    """Root netem qdisc request, built here: pyroute2's tc() sends 'rate' as TCA_RATE."""
    msg = tcmsg()
    msg["index"] = ifindex
    msg["parent"] = TC_H_ROOT
    msg["attrs"] = [("TCA_KIND", "netem"), ("TCA_OPTIONS", netem.options())]
    return msg


def _apply_netem(ipr, ns, ifname, netem):
    """Create or replace the root netem qdisc of ``ifname``."""
    msg = _netem_message(ipr.link_lookup(ifname=ifname)[0], netem)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    ipr.status.setdefault("nlm_generator", False)  # pyroute2 0.9.7 IPRoute lacks it: KeyError
    with _step(f"netem on {ifname} in {ns.name} (CONFIG_NET_SCH_NETEM?)"):
        ipr.nlm_request(msg, msg_type=RTM_NEWQDISC, msg_flags=flags)


@contextmanager
def build(topology, suffix=None):
    """Build ``topology``, yield its Network, tear everything down (also after a failure
    half-way). Namespaces are PREFIX-SUFFIX, the suffix by default the pid and a random
    part; kernel refusals raise SetupError."""
    suffix = suffix or f"{os.getpid()}-{secrets.token_hex(2)}"
    with ExitStack() as cleanup:
        target = cleanup.enter_context(_created_netns(f"{topology.target.namespace}-{suffix}"))
        if topology.host.init_netns:
            host = INIT_NETNS
            cleanup.callback(_forget_host_state, topology, _mptcp_limits(host))
        else:
            host = cleanup.enter_context(_created_netns(f"{topology.host.namespace}-{suffix}"))
        ends = (_End(target, cleanup.enter_context(target.iproute()), topology.target, False),
                _End(host, cleanup.enter_context(host.iproute()), topology.host, True))
        _add_veths(topology, *ends)
        for end in ends:
            _bring_up(topology, end)
        for end in ends:
            with _step("settling links"):
                wait_for(lambda: _ready(topology.links, end),
                         f"links up and addresses usable in {end.ns.name}")
        _add_default_routes(topology, ends[1])
        for end in ends:
            if end.side.source_routes:
                _add_source_routes(topology, end)
        for end in ends:
            with _step(f"net.mptcp.enabled=1 in {end.ns.name}"):
                end.ns.sysctl("net.mptcp.enabled", 1)
            for link in topology.links:
                if link.netem != Netem():
                    _apply_netem(end.ipr, end.ns, end.ifname(link), link.netem)
            _add_endpoints(topology, end)
        yield Network(topology, target, host)


def _mptcp_limits(ns):
    with ns.mptcp() as mptcp:
        reply = list(mptcp.limits("show"))[0]
    return {"subflows": reply.get_attr("MPTCP_PM_ATTR_SUBFLOWS") or 0,
            "add_addr_accepted": reply.get_attr("MPTCP_PM_ATTR_RCV_ADD_ADDRS") or 0}


def _forget_host_state(topology, limits):
    """What a host side in the initial netns leaves there once its veths are gone (their
    routes go with them): the source rules, the MPTCP endpoints and limits."""
    with INIT_NETNS.iproute() as ipr:
        for link in topology.links:
            family = socket.AF_INET6 if link.host_addr.version == 6 else socket.AF_INET
            with suppress(NetlinkError):
                ipr.rule("del", family=family, priority=1000 + link.index,
                         table=link.route_metric)
    with INIT_NETNS.mptcp() as mptcp:
        for link in topology.links:
            if (found := _endpoint_id(mptcp, link.host_addr.ip)) is not None:
                mptcp.endpoint("del", id=found)
        mptcp.limits("set", **limits)


def endpoints(mptcp):
    """{address: id} of the MPTCP endpoints an MPTCP path manager socket sees."""
    found = {}
    for msg in mptcp.endpoint("show"):
        addr = msg.get_attr("MPTCP_PM_ATTR_ADDR")
        ip = addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR4") or addr.get_attr("MPTCP_PM_ADDR_ATTR_ADDR6")
        found[str(ip)] = addr.get_attr("MPTCP_PM_ADDR_ATTR_ID")
    return found


def _endpoint_id(mptcp, ip):
    """The id of the MPTCP endpoint with address ``ip``, or None."""
    return endpoints(mptcp).get(str(ip))


def _add_endpoint(mptcp, side, ip):
    flags = sum(ENDPOINT_FLAGS[flag] for flag in side.endpoint_flags)
    mptcp.endpoint("add", flags=flags, **{f"addr{ip.version}": str(ip)})


def _add_veths(topology, target, host):
    """Veth pairs created in the target netns, peers moved to the host netns."""
    with open(host.ns.path, "rb") as host_netns:
        for link in topology.links:
            with _step(f"veth {link.target_ifname}/{link.host_ifname} (CONFIG_VETH?)"):
                target.ipr.link("add", ifname=link.target_ifname, kind="veth",
                                peer=link.host_ifname)
                target.ipr.link("set", index=target.ifindex(link.host_ifname),
                                net_ns_fd=host_netns.fileno())


def _bring_up(topology, end):
    """lo and the veth ends up, addresses added (IPv6 without DAD)."""
    with _step(f"bringing links up in {end.ns.name}"):
        for ifname in ["lo", *(end.ifname(link) for link in topology.links)]:
            end.ipr.link("set", index=end.ifindex(ifname), state="up")
    for link in topology.links:
        address = end.address(link)
        with _step(f"address {address} on {end.ifname(link)} in {end.ns.name}"):
            end.ipr.addr("add", index=end.ifindex(end.ifname(link)), address=str(address.ip),
                         prefixlen=address.network.prefixlen, flags=IFA_F_NODAD)


def _ready(links, end):
    """The links' veth ends operationally up, no address still tentative."""
    up = {msg.get("ifname") for msg in end.ipr.get_links() if msg.get("operstate") == "UP"}
    tentative = [msg for msg in end.ipr.get_addr() if msg.get("flags") & IFA_F_TENTATIVE]
    return {end.ifname(link) for link in links} <= up and not tentative


def _add_default_routes(topology, host):
    for link in topology.links:
        _add_default_route(link, host)


def _add_default_route(link, host, command="add"):
    gateway = link.target_addr.ip
    with _step(f"default route via {gateway} in {host.ns.name}"):
        host.ipr.route(command, dst="::/0" if gateway.version == 6 else "0.0.0.0/0",
                       gateway=str(gateway), priority=link.route_metric)


def _add_source_routes(topology, end):
    """Per link: 'from <this end's address> lookup 100+i', default via the peer there."""
    for link in topology.links:
        _add_source_route(link, end)
        own = link.host_addr if end.is_host else link.target_addr
        family = socket.AF_INET6 if own.version == 6 else socket.AF_INET
        with _step(f"source rule for {own.ip} in {end.ns.name}"):
            end.ipr.rule("add", family=family, src=str(own.ip), src_len=own.max_prefixlen,
                         table=link.route_metric, priority=1000 + link.index)


def _add_source_route(link, end, command="add"):
    """The default route of link's table 100+i (a link going down drops it; the rule
    stays)."""
    own, peer = ((link.host_addr, link.target_addr) if end.is_host
                 else (link.target_addr, link.host_addr))
    family = socket.AF_INET6 if own.version == 6 else socket.AF_INET
    with _step(f"source route for {own.ip} via {end.ifname(link)} in {end.ns.name}"):
        end.ipr.route(command, dst="::/0" if own.version == 6 else "0.0.0.0/0",
                      gateway=str(peer.ip), oif=end.ifindex(end.ifname(link)),
                      table=link.route_metric, family=family)


def _add_endpoints(topology, end):
    with _step(f"MPTCP limits and endpoints in {end.ns.name} (CONFIG_MPTCP?)"), \
            end.ns.mptcp() as mptcp:
        mptcp.limits("set", subflows=end.side.subflows,
                     add_addr_accepted=end.side.add_addr_accepted)
        for link in topology.links if end.side.endpoint_flags else ():
            _add_endpoint(mptcp, end.side, end.address(link).ip)
