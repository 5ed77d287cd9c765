"""dm-multipath over NVMe paths: the alternative to native NVMe multipath.

With native multipath off (nvme_core multipath=N), each controller of a subsystem shows
its namespace as a block device of its own (nvme0n1, nvme1n1, ...), and a dm-multipath
device over them takes the place of the native head, with one of device-mapper's path
selectors where native multipath has its iopolicy. The table is made with dmsetup, as
multipath-tools would for one priority group holding every path.
"""

import contextlib
import dataclasses
import os
from pathlib import Path

from mptcp_nvme import proc
from mptcp_nvme.errors import SetupError
from mptcp_nvme.options import DM_SELECTORS as SELECTORS
from mptcp_nvme.poll import wait_for

# dm-round-robin is built with CONFIG_DM_MULTIPATH, the others with their own option.
SELECTOR_KCONFIG = {"service-time": "DM_MULTIPATH_ST", "queue-length": "DM_MULTIPATH_QL",
                    "round-robin": "DM_MULTIPATH"}
REQUIREMENTS = ("tool:dmsetup", "kconfig:BLK_DEV_DM", "module:dm_multipath")
# Bio-based, as multipath-tools enforces for nvme:tcp paths: nvme-tcp's queues may block
# (BLK_MQ_F_BLOCKING) and request-based dm-multipath cannot say so for its own queue, so
# it issues cloned requests to nvme-tcp inside an RCU read-side section ("Voluntary
# context switch within RCU read-side critical section", seen here on 7.3.4 with 4 paths).
FEATURES = ("queue_mode", "bio")


def selector_requirements(selector):
    return (f"kconfig:{SELECTOR_KCONFIG[selector]}", f"module:dm_{selector.replace('-', '_')}")


def table(sectors, devices, selector, features=()):
    """The dm-multipath table line: ``features``, no hardware handler, one priority group
    (the first) with every device, no selector or path arguments (their defaults)."""
    if selector not in SELECTORS:
        raise ValueError(f"unknown dm path selector {selector!r} (choose from {', '.join(SELECTORS)})")
    if not devices:
        raise ValueError("a multipath table needs at least one path")
    return " ".join(map(str, (0, sectors, "multipath", len(features), *features, 0, 1, 1,
                              selector, 0, len(devices), 0, *devices)))


@dataclasses.dataclass(frozen=True)
class PathState:
    device: str        # major:minor
    active: bool       # A (active) or F (failed) in the status line
    fail_count: int


def parse_status(line):
    """Path states from ``dmsetup status`` of a multipath device with one priority
    group: '<start> <len> multipath <#feat> <feat>... <#hw> <hw>... <#pg> <next pg>
    <pg state> <#pg args>... <#paths> <#path args> <dev> <A|F> <fails> [<sel args>]...'."""
    words = line.split()
    try:
        i = words.index("multipath") + 1
        i += 1 + int(words[i])                     # features
        i += 1 + int(words[i])                     # hardware handler status
        groups = int(words[i])
        i += 2                                     # #groups, next group
        paths = []
        for _ in range(groups):
            i += 1                                 # group state (A, D, E)
            i += 1 + int(words[i])                 # the group's selector status args
            count, per_path = int(words[i]), int(words[i + 1])
            i += 2
            for _ in range(count):
                paths.append(PathState(words[i], words[i + 1] == "A", int(words[i + 2])))
                i += 3 + per_path
        return paths
    except (ValueError, IndexError):
        raise SetupError(f"unexpected dm-multipath status: {line!r}") from None


def block_device(name, sysfs="/sys"):
    """/dev/dm-N of the mapped device ``name`` (devtmpfs makes it; no udev needed)."""
    for disk in Path(sysfs, "block").glob("dm-*"):
        with contextlib.suppress(OSError):
            if (disk / "dm/name").read_text().strip() == name:
                return f"/dev/{disk.name}"
    return None


def devno(device):
    """'major:minor' of a block device node."""
    rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


class Multipath:
    """A dm-multipath device ``name`` over ``devices`` with ``selector``; removed on exit.
    ``device`` is its /dev/dm-N once entered."""

    def __init__(self, name, devices, selector, features=FEATURES, sysfs="/sys"):
        self.name, self.devices, self.selector = name, list(devices), selector
        self.features, self.sysfs = tuple(features), sysfs
        self.device = None

    def __enter__(self):
        sizes = {int(Path(self.sysfs, "block", Path(d).name, "size").read_text())
                 for d in self.devices}
        if len(sizes) != 1:
            raise SetupError(f"paths of different sizes cannot be one multipath device: "
                             f"{dict(zip(self.devices, sizes))}")
        line = table(sizes.pop(), [devno(d) for d in self.devices], self.selector, self.features)
        done = proc.cmd(["dmsetup", "create", self.name, "--noudevsync", "--table", line],
                        fail=False)
        if done.ret:
            raise SetupError(f"dmsetup create {self.name} --table {line!r} failed "
                             f"({done.ret}): {done.stderr.strip()}")
        try:
            self.device = wait_for(lambda: block_device(self.name, self.sysfs),
                                   f"the block device of dm {self.name}", 10)
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info):
        self._remove()

    def _remove(self):
        proc.cmd(["dmsetup", "remove", "--retry", "--noudevsync", self.name])

    def status(self):
        """``dmsetup status`` of the device: one line (parse_status reads its paths)."""
        return proc.cmd(["dmsetup", "status", self.name]).stdout.strip()


@contextlib.contextmanager
def opened(name, devices, selector, features=FEATURES):
    """The /dev/dm-N of a Multipath made for the duration."""
    with Multipath(name, devices, selector, features) as mpath:
        yield mpath.device
