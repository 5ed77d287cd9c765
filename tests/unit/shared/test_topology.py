"""Topology files, their validation, and a real build in network namespaces."""

import errno
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import replace

import pytest
from pyroute2 import MPTCP, IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from mptcp_nvme import topology
from mptcp_nvme.guest.net import builder
from mptcp_nvme.guest.net import namespaces
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.poll import wait_for
from mptcp_nvme.guest.net.stream import mptcp_subflows
from mptcp_nvme.topology import TOPOLOGY_DIR, Netem, load_topology, topology_for_paths
from mptcp_nvme.guest.net.builder import build

MINIMAL = '[[link]]\nrate = "1000mbit"\n'


def load_text(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path, load_topology(path)


@pytest.mark.parametrize("path", sorted(TOPOLOGY_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_file_loads(path):
    loaded = load_topology(path)
    assert loaded.description and loaded.links


@pytest.mark.parametrize("name, generated", [
    ("1path", topology_for_paths(1)),
    ("2path", topology_for_paths(2)),
    ("4path", topology_for_paths(4)),
    ("4path-lossy", topology_for_paths(4, loss=True)),
    ("4path-v6", topology_for_paths(4, family="ipv6")),
])
def test_script_files_equal_generated(name, generated):
    assert load_topology(TOPOLOGY_DIR / f"{name}.toml") == generated


def test_script_defaults():
    four = topology_for_paths(4, loss=True)
    assert [str(link.target_addr) for link in four.links] == [
        "10.1.1.1/24", "10.1.2.1/24", "10.1.3.1/24", "10.1.4.1/24"]
    assert [str(link.host_addr) for link in four.links][3] == "10.1.4.2/24"
    assert [link.route_metric for link in four.links] == [101, 102, 103, 104]
    assert (four.links[0].target_ifname, four.links[0].host_ifname) == ("ns1eth1", "ns2eth1")
    assert four.links[0].netem == Netem(rate_bit=10**9, delay_us=5000, loss_pct=0.5)
    assert (four.target.subflows, four.target.add_addr_accepted) == (8, 8)
    assert four.target.endpoint_flags == ("signal",)
    assert four.host.endpoint_flags == ("subflow",)
    v6 = topology_for_paths(2, family="ipv6").links[1]
    assert (str(v6.target_addr), str(v6.host_addr)) == ("dead:beef:2::1/64", "dead:beef:2::2/64")
    v4map = topology_for_paths(1, family="v4map").links[0]
    assert (v4map.adrfam, v4map.traddr, v4map.host_traddr) == (
        "ipv6", "::ffff:10.1.1.1", "::ffff:10.1.1.2")


def test_asymmetric_has_one_slow_path():
    rates = [link.netem.rate_bit for link in load_topology(TOPOLOGY_DIR / "asymmetric.toml").links]
    assert rates == [10**9, 10**9, 10**9, 500 * 10**6]


def test_defaults_and_overrides(tmp_path):
    _, loaded = load_text(tmp_path, MINIMAL + '[[link]]\nname = "v6"\nfamily = "ipv6"\n'
                          'target_addr = "fd00::1"\nhost_addr = "fd00::2"\njitter = "1ms"\n')
    assert loaded.target == topology.SCRIPT_TARGET and loaded.host == topology.SCRIPT_HOST
    first, second = loaded.links
    assert (first.name, first.family, str(first.target_addr)) == ("path1", "ipv4", "10.1.1.1/24")
    assert (str(second.target_addr), str(second.host_addr)) == ("fd00::1/64", "fd00::2/64")
    assert second.netem == Netem(jitter_us=1000)


@pytest.mark.parametrize("paths, family", [(0, "ipv4"), (9, "ipv4"), ("4", "ipv4"),
                                           (2, "ipx")])
def test_topology_for_paths_rejects(paths, family):
    with pytest.raises(UsageError):
        topology_for_paths(paths, family=family)


BAD_FILES = [
    ('colour = "red"\n' + MINIMAL, "colour", "unknown key"),
    ('[target]\nsubflow = 8\n' + MINIMAL, "target.subflow", "unknown key"),
    ('[[link]]\nratee = "1mbit"\n', "link[1].ratee", "unknown key"),
    ('target = 5\n' + MINIMAL, "target", "must be a table"),
    ('[[link]]\ntarget_addr = "10.1.1.300/24"\n', "link[1].target_addr", "bad address"),
    ('[[link]]\nhost_addr = 5\n', "link[1].host_addr", "must be a string"),
    ('[[link]]\nfamily = "ipv6"\ntarget_addr = "10.1.1.1"\n', "link[1].target_addr",
     "needs an IPv6 address"),
    ('[[link]]\nhost_addr = "10.9.9.9/24"\n', "link[1].host_addr", "not in target_addr's"),
    ('[[link]]\nrate = "fast"\n', "link[1].rate", "expected a rate"),
    ('[[link]]\nrate = 1000\n', "link[1].rate", "expected a rate"),
    ('[[link]]\nrate = "100gbit"\n', "link[1].rate", "too large"),
    ('[[link]]\ndelay = "5 minutes"\n', "link[1].delay", "expected a time"),
    ('[[link]]\njitter = "1h"\n', "link[1].jitter", "expected a time"),
    ('[[link]]\nloss = "0.5"\n', "link[1].loss", "expected a percentage"),
    ('[[link]]\nloss = "150%"\n', "link[1].loss", "too large"),
    (MINIMAL + '[[link]]\nname = "path1"\n', "link[2].name", "duplicate link name"),
    (MINIMAL + '[[link]]\ntarget_addr = "10.1.1.1/24"\nhost_addr = "10.1.1.3/24"\n',
     "link[2].target_addr", "duplicate address 10.1.1.1"),
    (MINIMAL + '[[link]]\ntarget_addr = "10.1.1.5/24"\nhost_addr = "10.1.1.6/24"\n',
     "link[2].target_addr", "overlaps link[1]"),
    ('description = "none"\n', "link", "need 1..8"),
    ('[[link]]\n' * 9, "link", "need 1..8"),
    ('link = 3\n', "link", "array of tables"),
    ('link = [3]\n', "link[1]", "must be a table"),
    ('family = "ipx"\n' + MINIMAL, "family", "must be one of ipv4, ipv6, v4map"),
    ('[[link]]\nfamily = "inet"\n', "link[1].family", "must be one of"),
    ('[host]\nsubflows = 9\n' + MINIMAL, "host.subflows", "integer 0..8"),
    ('[host]\nsubflows = true\n' + MINIMAL, "host.subflows", "integer 0..8"),
    ('[host]\nendpoint_flags = ["subflow", "bogus"]\n' + MINIMAL, "host.endpoint_flags",
     "must be a list of"),
    ('[host]\nendpoint_flags = [{}]\n' + MINIMAL, "host.endpoint_flags", "must be a list of"),
    ('[host]\nnamespace = "ns1"\n' + MINIMAL, "host.namespace", "same as target.namespace"),
    ('[target]\ninit_netns = true\n' + MINIMAL, "target.init_netns", "only the host side"),
    ('[host]\ninit_netns = "yes"\n' + MINIMAL, "host.init_netns", "must be"),
    ('[target]\nnamespace = "ns 1"\n' + MINIMAL, "target.namespace", "must be 1..32"),
    ('description = 3\n' + MINIMAL, "description", "must be a string"),
]


@pytest.mark.parametrize("text, key, problem", BAD_FILES,
                         ids=[f"{key}: {problem}" for _, key, problem in BAD_FILES])
def test_bad_file_names_file_and_key(tmp_path, text, key, problem):
    with pytest.raises(UsageError) as raised:
        load_text(tmp_path, text)
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'bad.toml'}: {key}: "), message
    assert problem in message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize("text, problem", [("[[link]\n", "invalid TOML"), (None, "cannot read")])
def test_unreadable_file(tmp_path, text, problem):
    path = tmp_path / "file.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=f"^{path}: {problem}"):
        load_topology(path)


# tc qdisc add dev lo root netem rate 1000mbit delay 5ms 1ms loss 0.5%, as sent by
# iproute2 (strace), without the nlmsghdr; lo is ifindex 1.
TC_NETEM_REQUEST = bytes.fromhex(
    "00000000" "01000000" "00000000" "ffffffff" "00000000"  # tcmsg, parent root
    "0a000100" "6e6574656d000000"  # TCA_KIND "netem"
    "30000200" "2d310100" "e8030000" "14ae4701" "00000000" "00000000" "093d0000"
    "14000600" "40597307" "00000000" "00000000" "00000000")  # TCA_OPTIONS, TCA_NETEM_RATE


def test_netem_request_encodes_like_tc():
    netem = Netem.parse(rate="1000mbit", delay="5ms", jitter="1ms", loss="0.5%")
    msg = builder._netem_message(1, netem)
    msg.encode()
    assert bytes(msg.data[16:]) == TC_NETEM_REQUEST


# Building for real: root, veth, MPTCP and (for netem) sch_netem on the running kernel.

def _probe_kernel():
    """{feature: the kernel's refusal} for what a build needs, probed in a throwaway netns.

    Only the refusals that mean "not built in" count: anything else fails the probe.
    """
    if os.geteuid() != 0:
        return {"root": "network namespaces need root"}
    missing = {}
    name = f"probe-{os.getpid()}-{secrets.token_hex(2)}"
    pyroute2_netns.create(name)
    try:
        with IPRoute(netns=name) as ipr:
            try:
                ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
            except NetlinkError as err:
                if err.code != errno.EOPNOTSUPP:
                    raise
                missing["veth (CONFIG_VETH)"] = "creating a veth pair: EOPNOTSUPP"
            try:
                builder._apply_netem(ipr, namespaces.Netns(name), "lo", Netem())
            except SetupError as err:
                if err.__cause__.code != errno.ENOENT:
                    raise
                missing["sch_netem (CONFIG_NET_SCH_NETEM)"] = "adding a netem qdisc: ENOENT"
        try:
            MPTCP(netns=name).close()
        except NetlinkError as err:
            if err.code != errno.ENOENT:
                raise
            missing["MPTCP path manager (CONFIG_MPTCP)"] = "genl family mptcp_pm: ENOENT"
    finally:
        pyroute2_netns.remove(name)
    return missing


@pytest.fixture(scope="module")
def missing():
    return _probe_kernel()


def require(missing, *features):
    """Skip, naming what the running kernel lacks of ``features`` (first words)."""
    absent = {f: why for f, why in missing.items() if f == "root" or f.split()[0] in features}
    if absent:
        detail = "; ".join(f"{feature}: {why}" for feature, why in absent.items())
        pytest.skip(f"kernel {os.uname().release} lacks {detail}")


def unshaped(topo):
    return replace(topo, links=tuple(replace(link, netem=Netem()) for link in topo.links))


def with_family(topo, family):
    def moved(link):
        target, host = topology.default_addresses(link.index, family)
        return replace(link, family=family, target_addr=target, host_addr=host)
    return replace(topo, links=tuple(moved(link) for link in topo.links))


def addresses(ipr):
    names = {msg["index"]: msg.get("ifname") for msg in ipr.get_links()}
    return {(names[msg["index"]], f"{msg.get('address')}/{msg['prefixlen']}")
            for msg in ipr.get_addr() if names[msg["index"]].startswith("ns")
            and not ipaddress.ip_address(msg.get("address")).is_link_local}


def default_routes(ipr, family, table=254):
    return {(msg.get("gateway"), msg.get("priority"))
            for msg in ipr.get_routes(family=family, table=table) if msg["dst_len"] == 0}


def source_rules(ipr, family):
    """{(source address, table)} of the policy rules that match on a source."""
    return {(msg.get_attr("FRA_SRC"), msg.get_attr("FRA_TABLE"))
            for msg in ipr.get_rules(family=family) if msg["src_len"]}


def endpoints(ns):
    with ns.mptcp() as mptcp:
        limits = mptcp.limits("show")[0]
        found = set()
        for msg in mptcp.endpoint("show"):
            addr = msg.get("addr")
            found.add((addr.get("addr4") or addr.get("addr6"), addr.get("flags")))
        return (limits.get("subflows"), limits.get("rcv_add_addrs")), found


def netem_qdiscs(ns):
    with ns.iproute() as ipr:
        names = {msg["index"]: msg.get("ifname") for msg in ipr.get_links()}
        return {names[msg["index"]]: msg.get("options")
                for msg in ipr.get_qdiscs() if msg.get("kind") == "netem"}


def netem_rate(options):
    """Bytes/s of a dumped netem qdisc."""
    return options.get_attr("TCA_NETEM_RATE")["rate"]


@contextmanager
def connected_pair(net, link, proto=0):
    """A (host client, target peer) stream socket pair connected over ``link``."""
    family = socket.AF_INET if link.adrfam == "ipv4" else socket.AF_INET6
    with net.target.enter():
        server = socket.socket(family, socket.SOCK_STREAM, proto)
    with net.host.enter():
        client = socket.socket(family, socket.SOCK_STREAM, proto)
    with server, client:
        server.settimeout(10)
        server.bind((link.traddr, 0))
        server.listen()
        client.settimeout(10)
        client.connect((link.traddr, server.getsockname()[1]))
        peer, _ = server.accept()
        with peer:
            peer.settimeout(10)
            yield client, peer


def transfer(net, link, size=1 << 16):
    """Send ``size`` bytes host -> target over ``link`` with plain TCP; return them received."""
    with connected_pair(net, link) as (client, peer):
        assert peer.getpeername()[0] == link.host_traddr
        client.sendall(b"x" * size)
        client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := peer.recv(1 << 16):
            received += chunk
    return len(received)


def extra_subflows(net, link):
    """MPTCP subflows the host joins to a connection to ``link``'s target address."""
    with connected_pair(net, link, socket.IPPROTO_MPTCP) as (client, peer):
        client.sendall(b"ping")
        assert peer.recv(4) == b"ping"
        peer.sendall(b"pong")
        assert client.recv(4) == b"pong"
        return wait_for(lambda: mptcp_subflows(client), "MPTCP subflows joined")


def gone(net):
    return not any(os.path.exists(ns.path) for ns in (net.target, net.host))


@pytest.mark.parametrize("family", topology.FAMILIES)
def test_build_unshaped(missing, family):
    require(missing, "veth", "MPTCP")
    topo = with_family(unshaped(load_topology(TOPOLOGY_DIR / "2path.toml")), family)
    home = os.stat("/proc/thread-self/ns/net").st_ino
    with build(topo) as net:
        assert os.path.exists(net.target.path) and os.path.exists(net.host.path)
        with net.target.enter():
            assert os.stat("/proc/thread-self/ns/net").st_ino == os.stat(net.target.path).st_ino
            assert {name for _, name in socket.if_nameindex()} == {"lo", "ns1eth1", "ns1eth2"}
        assert os.stat("/proc/thread-self/ns/net").st_ino == home
        with net.target.iproute() as ipr:
            assert addresses(ipr) == {(link.target_ifname, str(link.target_addr))
                                      for link in topo.links}
        with net.host.iproute() as ipr:
            assert addresses(ipr) == {(link.host_ifname, str(link.host_addr))
                                      for link in topo.links}
            inet = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
            assert default_routes(ipr, inet) == {(str(link.target_addr.ip), 100 + link.index)
                                                 for link in topo.links}
            assert source_rules(ipr, inet) == {(str(link.host_addr.ip), 100 + link.index)
                                               for link in topo.links}
            for link in topo.links:
                routes = default_routes(ipr, inet, table=100 + link.index)
                assert {gateway for gateway, _ in routes} == {str(link.target_addr.ip)}
        with net.target.iproute() as ipr:
            assert source_rules(ipr, socket.AF_INET6 if family == "ipv6" else socket.AF_INET) == set()
        assert endpoints(net.target) == ((8, 8), {(str(link.target_addr.ip), 1)
                                                   for link in topo.links})
        assert endpoints(net.host) == ((8, 8), {(str(link.host_addr.ip), 2)
                                                 for link in topo.links})
        assert netem_qdiscs(net.target) == netem_qdiscs(net.host) == {}
        if shutil.which("nsenter"):
            enabled = subprocess.run([*net.host.argv(), "cat", "/proc/sys/net/mptcp/enabled"],
                                     capture_output=True, text=True, check=True)
            assert enabled.stdout == "1\n"
        assert extra_subflows(net, topo.links[0]) == 1
        before = net.link_counters()
        assert transfer(net, topo.links[1]) == 1 << 16
        after = net.link_counters()
        assert after[2].tx_bytes - before[2].tx_bytes >= 1 << 16
        assert after[2].rx_bytes > before[2].rx_bytes
    assert gone(net)


@pytest.mark.parametrize("family", ("ipv4", "ipv6"))
def test_source_routes_keep_a_cross_path_connection_on_its_source_link(missing, family):
    """A host socket bound to link 2's address and connected to link 1's target address
    (what an MPTCP subflow endpoint does) leaves by link 2, not by link 1."""
    require(missing, "veth", "MPTCP")
    topo = with_family(unshaped(load_topology(TOPOLOGY_DIR / "2path.toml")), family)
    inet = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
    with build(topo) as net:
        first, second = topo.links
        with net.target.enter():
            server = socket.socket(inet, socket.SOCK_STREAM)
        with net.host.enter():
            client = socket.socket(inet, socket.SOCK_STREAM)
        with server, client:
            server.bind((first.traddr, 0))
            server.listen()
            client.settimeout(10)
            client.bind((second.host_traddr, 0))
            before = net.link_counters()
            client.connect((first.traddr, server.getsockname()[1]))
            peer, _ = server.accept()
            with peer:
                drain = threading.Thread(target=lambda: [None for _ in iter(lambda: peer.recv(1 << 16), b"")])
                drain.start()
                client.sendall(b"w" * (1 << 20))
                client.shutdown(socket.SHUT_WR)
                drain.join(timeout=10)
            after = net.link_counters()
        sent = {i: after[i].tx_bytes - before[i].tx_bytes for i in after}
        assert sent[2] > 1 << 20 and sent[1] < 1 << 16, sent


def test_build_2path_with_netem(missing):
    require(missing, "veth", "MPTCP", "sch_netem")
    topo = load_topology(TOPOLOGY_DIR / "2path.toml")
    with build(topo) as net:
        for ns, prefix in ((net.target, "ns1eth"), (net.host, "ns2eth")):
            qdiscs = netem_qdiscs(ns)
            assert set(qdiscs) == {f"{prefix}1", f"{prefix}2"}
            for options in qdiscs.values():
                assert netem_rate(options) == 125_000_000
                assert options["loss"] == 0
        assert transfer(net, topo.links[0]) == 1 << 16
        changed = net.set_netem(1, rate="500mbit", delay="5ms", loss="0.5%")
        assert changed == Netem(rate_bit=500 * 10**6, delay_us=5000, loss_pct=0.5)
        assert net.set_netem(1, loss="0%") == replace(changed, loss_pct=0)
        for ns, prefix in ((net.target, "ns1eth"), (net.host, "ns2eth")):
            qdiscs = netem_qdiscs(ns)
            assert netem_rate(qdiscs[f"{prefix}1"]) == 62_500_000
            assert qdiscs[f"{prefix}1"]["delay"] == builder.netem_options(Netem(delay_us=5000))["delay"]
            assert qdiscs[f"{prefix}1"]["loss"] == 0
            assert netem_rate(qdiscs[f"{prefix}2"]) == 125_000_000
        assert transfer(net, topo.links[0]) == 1 << 16
    assert gone(net)


def test_failed_build_leaves_nothing(missing, monkeypatch):
    require(missing, "veth")
    created = []
    real_create = builder.pyroute2_netns.create

    def create(name):
        created.append(name)
        real_create(name)

    def refuse(*_):
        raise SetupError("injected failure")

    monkeypatch.setattr(builder.pyroute2_netns, "create", create)
    monkeypatch.setattr(builder, "_add_default_routes", refuse)
    with pytest.raises(SetupError, match="injected failure"):
        with build(unshaped(topology_for_paths(2))):
            pytest.fail("build() yielded despite a failed step")
    assert len(created) == 2
    assert not any(os.path.exists(f"/run/netns/{name}") for name in created)


def test_build_without_netem_fails_cleanly(missing):
    """A kernel without sch_netem refuses the script's topology: one line, nothing left."""
    require(missing, "veth", "MPTCP")
    if "sch_netem (CONFIG_NET_SCH_NETEM)" not in missing:
        pytest.skip("the kernel has sch_netem: nothing refuses")
    with pytest.raises(SetupError) as raised:
        with build(topology_for_paths(1), suffix=f"{os.getpid()}-nonetem"):
            pass
    assert "CONFIG_NET_SCH_NETEM" in str(raised.value)
    assert raised.value.__cause__.code == errno.ENOENT
    assert not os.path.exists(f"/run/netns/ns1-{os.getpid()}-nonetem")


def test_link_bytes_is_the_one_per_link_accounting():
    links = topology.topology_for_paths(2).links
    C = topology.LinkCounters
    moved = topology.LinkBytes.between(links, {1: C(100, 1000), 2: C(0, 0)},
                                       {1: C(400, 1600), 2: C(100, 1800)})
    assert moved.rx == {"path1": 600, "path2": 1800} and moved.tx == {"path1": 300, "path2": 100}
    assert moved.of() == {"path1": 900, "path2": 1900}
    assert moved.shares("rx") == {"path1": 0.25, "path2": 0.75}
    assert moved.format("rx") == "path1=25% path2=75%"
    assert moved.format("tx", shares=False) == "path1=300 path2=100"


def test_the_host_side_may_live_in_the_initial_netns(tmp_path):
    path = tmp_path / "init.toml"
    path.write_text("[host]\ninit_netns = true\n" + MINIMAL)
    loaded = topology.load_topology(path)
    assert loaded.host.init_netns and not loaded.target.init_netns
    assert namespaces.INIT_NETNS.path == "/proc/1/ns/net"
    assert namespaces.INIT_NETNS.argv() == ["nsenter", "--net=/proc/1/ns/net"]


def test_ipv6_source_routes_need_ipv6_policy_tables():
    assert topology.requirements(topology.topology_for_paths(2, family="ipv6")) == (
        "kconfig:IPV6_MULTIPLE_TABLES",)
    assert topology.requirements(topology.topology_for_paths(2, family="ipv4")) == ()
    assert topology.requirements(topology.topology_for_paths(2, family="v4map")) == ()
    plain = topology.topology_for_paths(2, family="ipv6")
    plain = topology.replace(plain, host=topology.replace(plain.host, source_routes=False))
    assert topology.requirements(plain) == ()


def test_expected_subflows_on_the_script_topology_are_the_7_per_queue_it_shows():
    topo = topology.topology_for_paths(4)
    pairs = topology.expected_subflows(topo, topo.links[0])
    assert pairs == sorted([("path1", "path1"), ("path2", "path1"), ("path3", "path1"),
                            ("path4", "path1"), ("path2", "path2"), ("path3", "path3"),
                            ("path4", "path4")])


def test_expected_subflows_across_families_on_mixed_family_toml():
    """Measured on 7.3.4 (stock and the test kernel): endpoint joins stay within the IP
    version of the connected address, announced addresses are joined whatever theirs."""
    topo = topology.load_topology(topology.TOPOLOGY_DIR / "mixed-family.toml")
    fast, slow, v4map = topo.links
    assert [link.family for link in topo.links] == ["ipv6", "ipv6", "v4map"]
    assert topology.expected_subflows(topo, fast) == [
        ("v4map", "v4map"), ("v6fast", "v6fast"), ("v6slow", "v6fast"), ("v6slow", "v6slow")]
    assert topology.expected_subflows(topo, v4map) == [
        ("v4map", "v4map"), ("v6fast", "v6fast"), ("v6slow", "v6slow")]


def test_expected_subflows_follow_endpoints_and_limits():
    topo = topology.topology_for_paths(4)
    no_signal = replace(topo, target=replace(topo.target, endpoint_flags=()))
    assert topology.expected_subflows(no_signal, topo.links[0]) == [
        ("path1", "path1"), ("path2", "path1"), ("path3", "path1"), ("path4", "path1")]
    limited = replace(topo, host=replace(topo.host, subflows=2))
    assert len(topology.expected_subflows(limited, topo.links[0])) == 3
    none = replace(topo, host=replace(topo.host, endpoint_flags=()), target=replace(
        topo.target, endpoint_flags=()))
    assert topology.expected_subflows(none, topo.links[1]) == [("path2", "path2")]


def test_a_built_network_has_nothing_tentative_when_it_is_yielded(missing):
    """No IPv6 DAD in the namespaces a build creates: their link-local addresses are not
    tentative either, so the build does not wait out RFC 4862's probe (a second a build)."""
    require(missing, "veth", "MPTCP")
    from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_TENTATIVE
    topo = unshaped(load_topology(TOPOLOGY_DIR / "2path.toml"))
    with build(topo) as net:
        for ns in (net.target, net.host):
            with ns.iproute() as ipr:
                six = [m for m in ipr.get_addr(family=socket.AF_INET6)
                       if m.get_attr("IFA_ADDRESS").startswith("fe80:")]
                assert six and not [m for m in six if m["flags"] & IFA_F_TENTATIVE], six
            assert open_sysctl(ns, "net/ipv6/conf/default/accept_dad") == "0"


def open_sysctl(ns, key):
    with ns.enter(), open(f"/proc/sys/{key}") as value:
        return value.read().strip()


def test_achievable_rate_is_the_link_rate_or_its_loss_limited_rate():
    lossless = topology.topology_for_paths(2, rate="30mbit")
    assert [topology.achievable_bit(link) for link in lossless.links] == [30e6, 30e6]
    assert topology.capacity_bit(lossless) == 60e6
    lossy = topology.topology_for_paths(1, loss=True, rate="30mbit", flows=2)
    link = lossy.links[0]
    one = topology.achievable_bit(link)
    # Mathis at the round trip of netem's delay on both ends, one flow
    assert one == pytest.approx(1448 * 8 / (2 * link.netem.delay_us / 1e6) * 1.22
                                / (link.netem.loss_pct / 100) ** 0.5)
    assert one < 30e6 and topology.achievable_bit(link, flows=9) == 30e6
    # loss without delay limits nothing the model knows of; an unshaped link is unknown
    no_delay = topology.replace(link, netem=topology.Netem.parse(rate="30mbit", loss="1%"))
    assert topology.achievable_bit(no_delay) == 30e6
    assert topology.capacity_bit(topology.topology_for_paths(2)) == 2e9
    unshaped = topology.replace(lossless, links=(topology.replace(
        link, netem=topology.Netem()),))
    assert topology.achievable_bit(unshaped.links[0]) is None
    assert topology.capacity_bit(unshaped) is None


def test_a_transfer_is_link_limited_from_the_saturated_share_of_its_links_rates():
    links = topology.topology_for_paths(4, rate="50mbit").links
    limited, why = topology.link_limited(links, 170e6)
    assert limited is True and "170 of the 200 Mbit/s" in why and "path1, path2" in why
    limited, why = topology.link_limited(links[:2], 70e6)
    assert limited is False and "70 of the 100 Mbit/s" in why and "(70%" in why
    assert topology.link_limited(links, topology.SATURATED * 200e6)[0] is True
    unshaped = links[:1] + (topology.replace(links[1], netem=topology.Netem()),)
    assert topology.link_limited(unshaped, 1e6)[0] is None
    assert topology.link_limited((), 1e6)[0] is None


def test_eight_links_with_the_script_mesh_ask_for_more_joins_than_the_limit_allows():
    """14 joins (7 host endpoints to the first address, 7 announced addresses) against
    the kernel's 8: capped, so which links get a subflow is the path manager's choice;
    the script's 4 links (6 joins) are not."""
    eight = topology.topology_for_paths(8)
    joins, limit = topology.join_candidates(eight, eight.links[0])
    assert (len(joins), limit) == (14, 8) and topology.subflows_capped(eight, eight.links[0])
    assert len(topology.expected_subflows(eight, eight.links[0])) == 9
    four = topology.topology_for_paths(4)
    assert not topology.subflows_capped(four, four.links[0])


def test_a_bonded_topology_has_one_address_per_side_and_no_mptcp_endpoints():
    topo = topology.bonded(topology.topology_for_paths(4, rate="30mbit"), "802.3ad")
    assert topo.bond == topology.Bond("802.3ad") and topo.bond.hashes
    assert topo.traddrs == ["10.1.1.1"] and len(topo.links) == 4
    assert topo.host.endpoint_flags == () == topo.target.endpoint_flags
    assert not topo.host.source_routes
    assert not topology.Bond("active-backup").hashes
    assert topo != topology.topology_for_paths(4, rate="30mbit")     # the pool keeps them apart
    with pytest.raises(UsageError, match="bond mode must be one of balance-rr"):
        topology.bonded(topo, "broadcast")


def test_loss_on_the_last_links_only_leaves_the_others_clean():
    every = topology.topology_for_paths(4, loss=True, rate="30mbit")
    one = topology.topology_for_paths(4, loss=True, rate="30mbit", loss_links=1)
    assert [link.netem.loss_pct > 0 for link in every.links] == [True] * 4
    assert [link.netem.loss_pct > 0 for link in one.links] == [False, False, False, True]
    assert one.links[3].netem == every.links[3].netem
    assert one.links[0].netem == topology.Netem.parse(rate="30mbit")
    assert "on the last 1" in one.description
    assert topology.topology_for_paths(4, rate="30mbit", loss_links=1).links[3].netem.loss_pct == 0
    script = topology.script_topology(2, loss=True, rate="30mbit", loss_links=2).links
    assert [link.netem.loss_pct > 0 for link in script] == [False, False, True, True]
    with pytest.raises(UsageError, match="loss links: must be 1..4"):
        topology.topology_for_paths(4, loss=True, loss_links=5)
