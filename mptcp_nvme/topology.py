"""Two network namespaces joined by veth paths, as in mptcp_nvme.sh: the model (shared
by both sides: the host reads topologies, the guest builds them with
guest/net/builder.py, the only code that needs pyroute2).

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
other target address announced by a "signal" endpoint, whatever its version when the
connection is an IPv6 socket (ipv6 and v4map links), only IPv4 ones when it is an IPv4
socket (an ipv4 link), from the host link of that address's subnet, where the target
listens on that address and port (nvmet: a port per link, one trsvcid). So on 2 ipv6 + 1 v4map links, a connection over
an ipv6 link has subflows on all three, the v4map one joined only through its announced
address; a connection over the v4map link has none from the ipv6 endpoints to it.
(expected_subflows() gives these pairs.) All of it within the subflow limit (the kernel
allows 8 joins at most): where the rules ask for more (8 links with a host "subflow" and
a target "signal" endpoint each ask for 14), the path manager opens as many as the limit
allows, and which links they use depends on timing (subflows_capped()).

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
import tomllib
from collections import namedtuple
from dataclasses import dataclass, replace

from mptcp_nvme import SOURCE_DIR
from mptcp_nvme.errors import UsageError
from mptcp_nvme.vocabulary import BOND_MODES, FAMILIES

TOPOLOGY_DIR = SOURCE_DIR / "topologies"
MAX_LINKS = 8  # MPTCP_PM_ADDR_MAX: endpoints per namespace
# What a test using this module needs of the kernel and rootfs (guest.checks.gates.require).
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
class Bond:
    """A Linux bond on each side with every link's veth end as a slave, addressed with
    the first link's addresses: NVMe sees one path and the bond spreads its flows over
    the links (or, active-backup, keeps them on one and fails over). Set up as a user
    would: miimon link monitoring, layer3+4 hashing where the mode hashes, fast LACP
    for 802.3ad (the two sides' bonds negotiate it over the veths)."""

    mode: str
    miimon_ms: int = 100
    xmit_hash_policy: str = "layer3+4"
    lacp_rate: str = "fast"

    target_ifname = "ns1bond"
    host_ifname = "ns2bond"

    @property
    def hashes(self):
        """Whether the mode picks a slave per flow by xmit_hash_policy."""
        return self.mode in ("balance-xor", "802.3ad")


@dataclass(frozen=True)
class Topology:
    description: str
    target: Side
    host: Side
    links: tuple
    bond: Bond | None = None

    @property
    def traddrs(self):
        """The target's address on every link, as NVMe and sockets use them; with a
        bond, the bond's one address."""
        return [link.traddr for link in (self.links[:1] if self.bond else self.links)]


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


def achievable_bit(link, flows=1):
    """What ``flows`` TCP flows can carry over ``link``, bit/s: its netem rate, or less
    where it drops packets and delays them (the loss-limited rate, _flow_limit_bit, at
    the round trip of netem's delay on both ends); None for an unshaped link, which only
    the guest's CPU limits."""
    rate = link.netem.rate_bit or None
    if link.netem.loss_pct and link.netem.delay_us:
        limit = flows * _flow_limit_bit(2 * link.netem.delay_us, link.netem.loss_pct)
        rate = min(rate, limit) if rate else limit
    return rate


def capacity_bit(topology, flows=1):
    """The sum of achievable_bit() over the links; None when a link is unshaped."""
    rates = [achievable_bit(link, flows) for link in topology.links]
    return None if None in rates else sum(rates)


SATURATED = 0.8   # a transfer at this share of its links' achievable rates is link-limited


def link_limited(links, bits_per_s):
    """(whether the links, not the guest, limited a transfer of ``bits_per_s`` over
    ``links``: it reached SATURATED of their summed achievable rates; the sentence saying
    what was compared). None for the first where a link is unshaped: nothing to compare.

    Shares that follow the links' rates and aggregates that add them up are claims about
    link-limited traffic; where the guest's CPU is the bottleneck (a debug kernel under
    TCG, say) the scheduler's split is free and neither claim applies."""
    rates = [achievable_bit(link) for link in links]
    if not rates or None in rates:
        return None, "a link is unshaped: no rate to compare with"
    capacity = sum(rates)
    limited = bits_per_s >= SATURATED * capacity
    return limited, (f"{bits_per_s / 1e6:.0f} of the {capacity / 1e6:.0f} Mbit/s that "
                     f"{', '.join(link.name for link in links)} can carry "
                     f"({bits_per_s / capacity:.0%}; link-limited from {SATURATED:.0%})")


def script_topology(paths, loss=False, family="ipv4", rate=None, flows=None, loss_links=None):
    """mptcp_nvme.sh's topology for its ``path`` argument: SCRIPT_LINKS links whatever
    ``paths`` is (more when it asks for more); options as topology_for_paths."""
    return topology_for_paths(max(SCRIPT_LINKS, paths), loss, family, rate, flows, loss_links)


def topology_for_paths(paths, loss=False, family="ipv4", rate=None, flows=None,
                       loss_links=None):
    """mptcp_nvme.sh's topology with ``paths`` veth pairs at ``rate`` (None: the
    script's; its loss=1 adds delay and loss, scaled to the rate for ``flows`` I/O queues
    per controller, by default one per CPU: loss_profile), on every link or, with
    ``loss_links``, on that many of the last links only (one flaky path among good ones)."""
    rate = rate or SCRIPT_RATE
    if type(paths) is not int or not 1 <= paths <= MAX_LINKS:
        raise UsageError(f"paths: must be 1..{MAX_LINKS}, not {paths!r}")
    if family not in FAMILIES:
        raise UsageError(f"family: must be one of {', '.join(FAMILIES)}, not {family!r}")
    if loss_links is not None and not 1 <= loss_links <= paths:
        raise UsageError(f"loss links: must be 1..{paths} (the links), not {loss_links!r}")
    clean = netem = Netem.parse(rate=rate)
    if loss:
        netem, _ = loss_profile(netem.rate_bit, flows or os.cpu_count())
    lossy = range(paths - (loss_links or paths) + 1, paths + 1)
    links = tuple(Link(i, f"path{i}", family, *default_addresses(i, family),
                       netem if i in lossy else clean)
                  for i in range(1, paths + 1))
    pairs = "veth pair" if paths == 1 else "veth pairs"
    described = f"rate {rate}"
    if loss:
        described += f" delay {netem.delay_us / 1000:.3g}ms loss {netem.loss_pct:g}%"
        if loss_links and loss_links < paths:
            described += f" on the last {loss_links}"
    return Topology(f"mptcp_nvme.sh: {paths} {pairs} ({family}), netem {described}",
                    SCRIPT_TARGET, SCRIPT_HOST, links)


def _ip_version(link):
    return 6 if link.family == "ipv6" else 4


def family_joinable(initial, link):
    """Whether a connection made over link ``initial`` can have a subflow on ``link`` at
    all: an IPv4 socket's (an ipv4 link; v4map is an IPv6 socket) joins no IPv6 address,
    announced or not (7.3.4: no byte on the ipv6 link of a stream over an ipv4 one)."""
    return not (initial.family == "ipv4" and link.family == "ipv6")


def join_candidates(topology, initial):
    """(the joins, as (host link, target link) name pairs, that the rules in this
    module's docstring ask for over link ``initial``, add_addr_accepted applied; the
    number of joins the subflow limits allow)."""
    others = [link for link in topology.links if link is not initial]
    joins = []
    if "subflow" in topology.host.endpoint_flags:
        joins += [(link.name, initial.name) for link in others
                  if _ip_version(link) == _ip_version(initial)]
    if "signal" in topology.target.endpoint_flags:
        announced = [(link.name, link.name) for link in others
                     if family_joinable(initial, link)]
        joins += announced[:topology.host.add_addr_accepted]
    return joins, min(topology.host.subflows, topology.target.subflows)


def subflows_capped(topology, initial):
    """Whether a connection over ``initial`` asks for more joins than the subflow limit
    allows (8 links with the script's mesh: 14 joins, the kernel's most is 8). The path
    manager then opens as many as the limit allows, but which ones depends on the order
    its announcements and local endpoints are handled in: no link is sure to get one."""
    joins, limit = join_candidates(topology, initial)
    return len(joins) > limit


def expected_subflows(topology, initial):
    """The subflows an MPTCP connection over link ``initial`` gets with this topology's
    endpoints, as sorted (host link name, target link name) pairs: the rules in this
    module's docstring, up to the host's subflow limit and add_addr_accepted. Where the
    limit cuts the rules' joins short (subflows_capped), which of them the kernel opens
    is its choice: this is one possible set, of the right size."""
    joins, limit = join_candidates(topology, initial)
    return sorted([(initial.name, initial.name)] + joins[:limit])


def bonded(topology, mode):
    """``topology`` with its links bonded on each side in bonding ``mode`` (Bond): no
    MPTCP endpoints or source routes, which a bond's one address (the first link's; the
    others' go unused) has no use for. UsageError for an unknown mode."""
    if mode not in BOND_MODES:
        raise UsageError(f"bond mode must be one of {', '.join(BOND_MODES)}, not {mode!r}")
    return replace(topology, bond=Bond(mode),
                   target=replace(topology.target, endpoint_flags=()),
                   host=replace(topology.host, endpoint_flags=(), source_routes=False))


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
