"""Set up once, test many: the networks of a VM's tests, each built by the first test
that asks for its topology and handed to the later tests that ask for the same one.

Building a topology (two namespaces, veths, addresses settling, routes, netem, MPTCP
endpoints) is the largest share of a selftest's setup under TCG, and the suite's cases
ask for a few topologies again and again (the script's 1, 2 and 4 links), in whatever
order the host sends them. A network is handed on only when it is as built and quiet:

- no test changed it (a link down, netem, an endpoint: ``Network.changes``);
- no TCP or MPTCP socket is still established in either of its namespaces;
- its host side has namespaces of its own (a host side in the initial netns, as the
  fault cases use, is shared with everything else there: always built anew);
- no test holds it now (two networks of one topology in one test are two).

Otherwise the test gets a new one, and says why (``Handout.fresh_because``). The MPTcpExt
counters of a handed-on network are not the test's own from zero: ``Handout.counters``
holds them as the test got it, and the after-test check counts from there. At most KEEP
networks are kept, the least recently used removed first."""

from collections import OrderedDict
from contextlib import ExitStack

from mptcp_nvme.guest.net import builder, netstat
from mptcp_nvme.guest.net.sock_diag import sockets


class Handout:
    """A network as one test got it: handed on from an earlier test (``counters``: its
    MPTcpExt counters then, per side) or built for this one (``fresh_because``: why a
    kept one was not handed on, None when there was none)."""

    def __init__(self, network, counters=None, fresh_because=None):
        self.network = network
        self.counters = counters
        self.fresh_because = fresh_because

    @property
    def handed_on(self):
        return self.counters is not None


def counters_by_side(network):
    """{"target"|"host": MPTcpExt counters} of the network's two namespaces."""
    found = {}
    for side, netns in (("target", network.target), ("host", network.host)):
        with netns.enter():
            found[side] = netstat.mptcp_counters()
    return found


def unquiet(network):
    """Why ``network`` is not as built and quiet (a sentence), or None."""
    if network.changes:
        return "a test changed it: " + ", ".join(network.changes)
    for side, netns in (("target", network.target), ("host", network.host)):
        with netns.enter():
            left = sockets()
        if left:
            return f"{len(left)} socket(s) still established in its {side} namespace"
    return None


KEEP = 8


class NetworkPool:
    """The networks of a run's tests (a context manager: every one removed on exit)."""

    def __init__(self, keep=KEEP):
        self.keep = keep
        self._kept = OrderedDict()   # topology -> (Network, ExitStack), least recent first
        self._held = {}          # id(Network) -> its ExitStack, or None when kept

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        stacks = [stack for _, stack in self._kept.values()]
        stacks += [stack for stack in self._held.values() if stack is not None]
        self._kept.clear()
        self._held.clear()
        with ExitStack() as closing:
            for stack in stacks:
                closing.push(stack)

    def acquire(self, topology):
        """A Handout of a network of ``topology`` for the calling test, which release()s
        it after the test."""
        kept = self._kept.get(topology)
        why = None
        if kept and id(kept[0]) not in self._held:
            network, stack = kept
            why = unquiet(network)
            if why is None:
                self._held[id(network)] = None
                self._kept.move_to_end(topology)
                return Handout(network, counters=counters_by_side(network))
            del self._kept[topology]
            stack.close()
        stack = ExitStack()
        network = stack.enter_context(builder.build(topology))
        if topology.host.init_netns or topology in self._kept:
            # the initial netns is everyone's, and a second network of a topology that
            # the test holds already is its own: both removed after the test
            self._held[id(network)] = stack
        else:
            self._kept[topology] = (network, stack)
            self._held[id(network)] = None
            self._forget_beyond_keep()
        return Handout(network, fresh_because=why)

    def _forget_beyond_keep(self):
        idle = [t for t, (network, _) in self._kept.items() if id(network) not in self._held]
        for topology in idle[:max(0, len(self._kept) - self.keep)]:
            self._kept.pop(topology)[1].close()

    def release(self, network):
        """After the test: a kept network waits for the next; any other is removed."""
        stack = self._held.pop(id(network), None)
        if stack is not None:
            stack.close()
