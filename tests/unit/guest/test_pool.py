"""The network pool (guest/net/pool.py): which test gets a kept network and which a new
one, and that every network is removed, with the builder and the kernel's views faked."""

import contextlib
from types import SimpleNamespace

import pytest

from mptcp_nvme import topology
from mptcp_nvme.guest.net import builder, netstat, pool


class FakeKernel:
    """builder.build, the established sockets and MPTcpExt of fake namespaces."""

    def __init__(self, monkeypatch):
        self.built, self.removed, self.established = [], [], {}
        self.entered = []
        monkeypatch.setattr(builder, "build", self.build)
        monkeypatch.setattr(pool, "sockets", lambda: self.established.get(self.entered[-1], []))
        monkeypatch.setattr(netstat, "mptcp_counters", lambda: {"MPJoinSynRx": len(self.built)})

    def netns(self, name):
        @contextlib.contextmanager
        def enter():
            self.entered.append(name)
            yield
        return SimpleNamespace(name=name, enter=enter)

    @contextlib.contextmanager
    def build(self, topo):
        n = len(self.built)
        network = SimpleNamespace(topology=topo, changes=[], target=self.netns(f"t{n}"),
                                  host=self.netns(f"h{n}"))
        self.built.append(network)
        try:
            yield network
        finally:
            self.removed.append(network)


@pytest.fixture
def kernel(monkeypatch):
    return FakeKernel(monkeypatch)


ONE, FOUR = topology.topology_for_paths(1), topology.topology_for_paths(4)


def test_a_quiet_network_is_handed_on_per_topology(kernel):
    with pool.NetworkPool() as networks:
        first = networks.acquire(ONE)
        assert not first.handed_on and first.fresh_because is None
        networks.release(first.network)
        other = networks.acquire(FOUR)          # another topology: built, both kept
        networks.release(other.network)
        again = networks.acquire(ONE)
        assert again.network is first.network and again.handed_on
        assert again.counters == {"target": {"MPJoinSynRx": 2}, "host": {"MPJoinSynRx": 2}}
        networks.release(again.network)
        assert kernel.removed == []
    assert kernel.removed == [first.network, other.network]     # the most recent first


def test_a_changed_or_busy_network_is_replaced_and_says_why(kernel):
    with pool.NetworkPool() as networks:
        first = networks.acquire(ONE)
        first.network.changes.append("link1 down")
        networks.release(first.network)
        second = networks.acquire(ONE)
        assert second.network is not first.network and kernel.removed == [first.network]
        assert second.fresh_because == "a test changed it: link1 down"
        networks.release(second.network)
        kernel.established["h1"] = ["a socket"]
        third = networks.acquire(ONE)
        assert third.fresh_because == "1 socket(s) still established in its host namespace"
        assert kernel.removed == [first.network, second.network]


def test_two_of_one_topology_in_a_test_and_the_initial_netns_are_never_kept(kernel):
    in_init = topology.replace(ONE, host=topology.replace(ONE.host, init_netns=True))
    with pool.NetworkPool() as networks:
        first, second = networks.acquire(ONE), networks.acquire(ONE)
        assert first.network is not second.network
        networks.release(second.network)
        assert kernel.removed == [second.network]      # the second lived for the test only
        networks.release(first.network)
        faulty = networks.acquire(in_init)
        networks.release(faulty.network)
        assert kernel.removed == [second.network, faulty.network]
        assert networks.acquire(ONE).network is first.network


def test_every_network_is_removed_when_the_module_ends_even_one_held(kernel):
    with pytest.raises(RuntimeError):
        with pool.NetworkPool() as networks:
            held = networks.acquire(ONE)
            networks.acquire(ONE)
            raise RuntimeError("the test failed")
    assert len(kernel.removed) == 2 and held.network in kernel.removed


def test_at_most_keep_networks_are_kept_the_least_recently_used_go_first(kernel):
    two = topology.topology_for_paths(2)
    with pool.NetworkPool(keep=2) as networks:
        for topo in (ONE, FOUR, ONE, two):
            networks.release(networks.acquire(topo).network)
        assert [n.topology for n in kernel.removed] == [FOUR]
        assert networks.acquire(ONE).handed_on
