"""Network namespaces by name: enter one, open netlink sockets bound to it."""

from contextlib import contextmanager

from pyroute2 import IPRoute, MPTCP
from pyroute2 import netns as pyroute2_netns



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
        with self.enter(), open(_sysctl_path(key), "w") as file:
            file.write(f"{value}\n")

    def read_sysctl(self, key):
        """Its value here, or None where the kernel has no such key."""
        try:
            with self.enter(), open(_sysctl_path(key)) as file:
                return file.read().strip()
        except FileNotFoundError:
            return None


def _sysctl_path(key):
    return f"/proc/sys/{key.replace('.', '/')}"


# The VM's initial network namespace. NVMe/TCP opens the sockets of a reconnect (after
# error recovery or a reset) from a kernel worker, in this namespace whatever the one the
# controller was created in: a host side that must reconnect lives here.
INIT_NETNS = Netns("init", "/proc/1/ns/net")
