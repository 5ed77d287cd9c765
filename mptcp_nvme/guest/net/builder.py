"""Builds a topology (mptcp_nvme.topology) with pyroute2: two network namespaces
joined by veth pairs, netem on both ends, addresses, routes (source routes per link
where the side asks for them) and MPTCP endpoints and limits; build() undoes it all
on exit."""

import os
import secrets
import socket
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_TENTATIVE
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg

from mptcp_nvme.errors import SetupError
from mptcp_nvme.poll import wait_for
from mptcp_nvme.guest.net.namespaces import INIT_NETNS, Netns
from mptcp_nvme.topology import Bond, ENDPOINT_FLAGS, LinkBytes, LinkCounters, Netem, Side


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
        created = Netns(name)
        # Its interfaces without IPv6 DAD, their link-local addresses too (the links' own
        # are added with IFA_F_NODAD): nothing tentative to wait out before the link is
        # ready, a second of every build otherwise (RFC 4862's one probe, RetransTimer 1 s).
        with _step(f"net.ipv6.conf.default.accept_dad=0 in {name}"):
            created.sysctl("net.ipv6.conf.default.accept_dad", 0)
        yield created
    finally:
        pyroute2_netns.remove(name)


@dataclass(frozen=True)
class _End:
    """The target or the host end of every link, during the build."""

    ns: Netns
    ipr: IPRoute
    side: Side
    is_host: bool
    indexes: dict = field(default_factory=dict, compare=False)     # ifname -> ifindex

    def ifname(self, link):
        return link.host_ifname if self.is_host else link.target_ifname

    @property
    def bond_ifname(self):
        return Bond.host_ifname if self.is_host else Bond.target_ifname

    def address(self, link):
        return link.host_addr if self.is_host else link.target_addr

    def ifindex(self, ifname):
        """Its index here, asked once by name (one RTM_GETLINK, not a dump of every
        link: each request is ~15 ms under TCG, a build asks for each name thrice)."""
        if ifname not in self.indexes:
            self.indexes[ifname] = self.ipr.link("get", ifname=ifname)[0]["index"]
        return self.indexes[ifname]


class Network:
    """A built topology: its two namespaces and live controls over its links."""

    def __init__(self, topology, target, host):
        self.topology = topology
        self.target = target
        self.host = host
        self.netem = {link.index: link.netem for link in topology.links}
        self.changes = []       # what the controls below changed since the build


    def set_netem(self, link_index, rate=None, delay=None, jitter=None, loss=None):
        """Change netem on both ends of a live link (tc-style strings; unset ones kept)."""
        netem = Netem.parse(self.netem[link_index], rate=rate, delay=delay,
                            jitter=jitter, loss=loss)
        link = self.topology.links[link_index - 1]
        self.changes.append(f"netem on {link.name}")
        for ns, ifname in ((self.target, link.target_ifname), (self.host, link.host_ifname)):
            with ns.iproute() as ipr:
                _apply_netem(ipr, ns, ifname, netem)
        self.netem[link_index] = netem
        return netem

    def set_link_up(self, link_index, up):
        """Set the host end of a live link administratively down, or up again. The kernel
        drops the routes through a link that goes down; up restores the host's default
        and source routes of that link, as a network manager would, once it is up. A
        bond's slave has no routes: up waits for the bond to see it up instead."""
        link = self.topology.links[link_index - 1]
        self.changes.append(f"{link.name} {'up' if up else 'down'}")
        with self.host.iproute() as ipr, _step(f"{link.host_ifname} {'up' if up else 'down'}"):
            ipr.link("set", index=ipr.link_lookup(ifname=link.host_ifname)[0],
                     state="up" if up else "down")
        if not up:
            return
        with self.host.iproute() as ipr:
            end = _End(self.host, ipr, self.topology.host, True)
            wait_for(lambda: _ready([link], end), f"{link.host_ifname} up again")
            if self.topology.bond:      # a slave: no routes of its own; the bond's miimon
                wait_for(lambda: _slave_up(ipr, end.bond_ifname, link.host_ifname),
                         f"{end.bond_ifname}'s miimon to see {link.host_ifname} up again")
                return
            _add_default_route(link, end, "replace")
            if end.side.source_routes:
                _add_source_route(link, end, "replace")

    def bond_active_link(self):
        """The link whose host end is the host bond's active slave (active-backup: the
        one carrying every flow)."""
        with self.host.iproute() as ipr:
            bond, _ = bond_state(ipr, Bond.host_ifname)
            active = ipr.link("get", index=bond["active_slave"])[0].get("ifname")
        return next(link for link in self.topology.links if link.host_ifname == active)

    def endpoint(self, link_index, present, side="host"):
        """Remove a side's MPTCP endpoint of a link (the host's: its subflows close; the
        target's: it withdraws the address, RM_ADDR), or add it again with the
        topology's flags (the host's path manager joins subflows from it; the target's
        announces the address again, ADD_ADDR)."""
        link = self.topology.links[link_index - 1]
        netns, flags_of = (self.host, self.topology.host) if side == "host" else \
            (self.target, self.topology.target)
        ip = (link.host_addr if side == "host" else link.target_addr).ip
        self.changes.append(f"{side} MPTCP endpoint of {link.name} "
                            f"{'added' if present else 'removed'}")
        with netns.mptcp() as mptcp, _step(f"MPTCP endpoint {ip} "
                                           f"{'added' if present else 'removed'}"):
            if present:
                _add_endpoint(mptcp, flags_of, ip)
                return
            found = _endpoint_id(mptcp, ip)
            if found is None:
                raise SetupError(f"no MPTCP endpoint {ip} in {netns.name}")
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


def netem_options(netem):
    """TCA_OPTIONS of a Netem for pyroute2's netem encoder (rate in bytes/s, times in us)."""
    return sched_netem.get_parameters({"rate": netem.rate_bit // 8, "delay": netem.delay_us,
                                       "jitter": netem.jitter_us, "loss": netem.loss_pct})


def _netem_message(ifindex, netem):
    """Root netem qdisc request, built here: pyroute2's tc() sends 'rate' as TCA_RATE."""
    msg = tcmsg()
    msg["index"] = ifindex
    msg["parent"] = TC_H_ROOT
    msg["attrs"] = [("TCA_KIND", "netem"), ("TCA_OPTIONS", netem_options(netem))]
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
            if topology.bond:
                _bond_links(topology, end, cleanup)
            else:
                _bring_up(topology, end)
        for end in ends:
            with _step("settling links"):
                wait_for(lambda: _ready(topology.links, end),
                         f"links up and addresses usable in {end.ns.name}")
        if topology.bond:
            for end in ends:
                wait_for(lambda: bond_ready(end.ipr, end.bond_ifname, topology),
                         f"{end.bond_ifname} ({topology.bond.mode}) with every link enslaved"
                         f"{', LACP agreed' if topology.bond.mode == '802.3ad' else ''}",
                         timeout=30)
        else:
            _add_default_routes(topology, ends[1])
        for end in ends:
            if end.side.source_routes:
                _add_source_routes(topology, end)
        for end in ends:
            with _step(f"net.mptcp.enabled=1 in {end.ns.name}"):
                end.ns.sysctl("net.mptcp.enabled", 1)
            _no_tcp_fallback(end.ns, cleanup)
            for link in topology.links:
                if link.netem != Netem():
                    _apply_netem(end.ipr, end.ns, end.ifname(link), link.netem)
            _add_endpoints(topology, end)
        yield Network(topology, target, host)


# MPTCP's fallback to TCP when MP_CAPABLE SYNs are lost (Linux 6.12+), which a fault test
# provokes on purpose by black-holing links: after syn_retrans_before_tcp_fallback (2)
# lost retransmissions the SYN goes out without MPTCP, and the connection (a reconnecting
# NVMe queue) stays plain TCP for its life: its subflows never come back on the other
# links (seen as MPCapableSYNTXDrop, "path2 4 of 6" after keep-alive on a loaded
# machine). An accepted fallback also turns active MPTCP off in the netns for
# blackhole_timeout, so that every later connection, in the initial netns the next
# tests' too, falls back. Both off where a network is built (128: every retransmission
# keeps MP_CAPABLE; 0: no detection, which also clears its state), as a deployment that
# wants its queues multipath after an outage sets them; the initial netns gets its
# values back afterwards.
NO_TCP_FALLBACK = {"net.mptcp.syn_retrans_before_tcp_fallback": 128,
                   "net.mptcp.blackhole_timeout": 0}


def _no_tcp_fallback(ns, cleanup):
    for key, value in NO_TCP_FALLBACK.items():
        before = ns.read_sysctl(key)
        if before is None:
            continue
        with _step(f"{key}={value} in {ns.name}"):
            ns.sysctl(key, value)
        if ns is INIT_NETNS:
            cleanup.callback(ns.sysctl, key, before)


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


# bonding's numbers for the names topology.Bond uses (include/uapi/linux/if_bonding.h)
BOND_MODE_IDS = {"balance-rr": 0, "active-backup": 1, "balance-xor": 2, "802.3ad": 4}
XMIT_HASH_POLICIES = {"layer2": 0, "layer3+4": 1, "layer2+3": 2}
LACP_RATES = {"slow": 0, "fast": 1}


def _bond_links(topology, end, cleanup):
    """The side's bond (topology.Bond) made, every link's veth end enslaved to it, the
    first link's address on it, all up. A bond in the initial netns (a host side
    there) is deleted at the end (its slaves go with their namespace's veths)."""
    bond = topology.bond
    attrs = {"bond_mode": BOND_MODE_IDS[bond.mode], "bond_miimon": bond.miimon_ms}
    if bond.hashes:
        attrs["bond_xmit_hash_policy"] = XMIT_HASH_POLICIES[bond.xmit_hash_policy]
    if bond.mode == "802.3ad":
        attrs["bond_ad_lacp_rate"] = LACP_RATES[bond.lacp_rate]
    name = end.bond_ifname
    with _step(f"bond {name} ({bond.mode}) in {end.ns.name} (CONFIG_BONDING?)"):
        end.ipr.link("add", ifname=name, kind="bond", **attrs)
    if end.ns is INIT_NETNS:
        cleanup.callback(_delete_link, name)
    with _step(f"enslaving the links to {name} in {end.ns.name}"):
        for link in topology.links:
            end.ipr.link("set", index=end.ifindex(end.ifname(link)), master=end.ifindex(name))
        for ifname in ["lo", name, *(end.ifname(link) for link in topology.links)]:
            end.ipr.link("set", index=end.ifindex(ifname), state="up")
    address = end.address(topology.links[0])
    with _step(f"address {address} on {name} in {end.ns.name}"):
        end.ipr.addr("add", index=end.ifindex(name), address=str(address.ip),
                     prefixlen=address.network.prefixlen, flags=IFA_F_NODAD)


def _delete_link(ifname):
    with INIT_NETNS.iproute() as ipr, suppress(NetlinkError, IndexError):
        ipr.link("del", index=ipr.link_lookup(ifname=ifname)[0])


def bond_state(ipr, ifname):
    """(the bond's IFLA_BOND_* attributes, {slave ifname: IFLA_BOND_SLAVE_* attributes})
    as netlink reports them, names without their prefix in lower case."""
    def attrs(nla):
        return {name.split("_", 2)[-1].lower().removeprefix("slave_"): value
                for name, value in (nla["attrs"] if nla else ())}
    links = ipr.get_links()
    bond = next(msg for msg in links if msg.get("ifname") == ifname)
    info = bond.get_attr("IFLA_LINKINFO")
    index = bond["index"]
    slaves = {}
    for msg in links:
        if msg.get_attr("IFLA_MASTER") == index:
            slave_info = msg.get_attr("IFLA_LINKINFO")
            slaves[msg.get("ifname")] = attrs(slave_info.get_attr("IFLA_INFO_SLAVE_DATA")
                                              if slave_info else None)
    return attrs(info.get_attr("IFLA_INFO_DATA") if info else None), slaves


def _slave_up(ipr, bond_ifname, slave):
    """The bond's link monitoring (miimon) reports ``slave`` up."""
    return bond_state(ipr, bond_ifname)[1].get(slave, {}).get("mii_status") == 0


def bond_ready(ipr, ifname, topology):
    """Every link enslaved and up in the bond; for 802.3ad, one aggregator with every
    port and a partner (LACP agreed with the other side's bond)."""
    bond, slaves = bond_state(ipr, ifname)
    wanted = {end for link in topology.links for end in (link.host_ifname, link.target_ifname)}
    if not (len(slaves) == len(topology.links) and set(slaves) <= wanted
            and all(s.get("mii_status") == 0 for s in slaves.values())):
        return False
    if topology.bond.mode != "802.3ad":
        return True
    info = dict(bond.get("ad_info", {}).get("attrs", ())) if bond.get("ad_info") else {}
    partner = info.get("IFLA_BOND_AD_INFO_PARTNER_MAC", "00:00:00:00:00:00")
    return (info.get("IFLA_BOND_AD_INFO_NUM_PORTS") == len(topology.links)
            and partner != "00:00:00:00:00:00")


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
