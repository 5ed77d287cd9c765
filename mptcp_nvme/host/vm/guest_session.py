"""Host side of running selftests in a guest: one VM running the agent (guest/agent.py).

The host sends one JSON line per test on the guest command's stdin (``run`` with the
test's nodeid and the next one, so module and session fixtures live across tests);
the guest answers on its stdout with lines tagged ``MARK``: ``ready`` once collected,
then ``result`` with pytest's own serialized reports. stdout carries nothing else.
While a test runs, the host may send ``sysrq`` (a test overran): a reader thread in the
guest writes the keys to /proc/sysrq-trigger at once (w: blocked tasks, l: every CPU's
backtrace) and answers ``sysrq-done``; the kernel's answer is on the console.
"""

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path


from mptcp_nvme import SOURCE_DIR
from mptcp_nvme.channel import GUEST_RESULTS_DIR, GUEST_SOURCE_DIR, MARK, REPLY_FD, REQUEST_FD
from mptcp_nvme.host.vm.qemu import VM, VMError



@dataclasses.dataclass(frozen=True)
class GuestLayout:
    """Where the guest finds the source tree, writes results, and which Python it runs."""
    source: str
    results: str
    python: str

    @classmethod
    def on_rootfs(cls):
        """The suite's rootfs: the source and results folders shared at fixed mount points."""
        return cls(GUEST_SOURCE_DIR, GUEST_RESULTS_DIR, "python3")

    @classmethod
    def on_host_root(cls, results):
        """The host's own root: the same paths as on the host, and this venv's Python."""
        return cls(str(SOURCE_DIR), str(results), sys.executable)


def guest_command(test_args, extra_args=(), layout=GuestLayout.on_rootfs(), shared=None,
                  args_file=None):
    """The shell command that starts the agent inside the guest on the files of
    ``test_args`` (``extra_args`` are guest paths already, e.g. --guest-config);
    ``shared`` maps further host folders to where the guest sees them. With
    ``args_file`` ((host path, guest path) of a file in a shared folder) the files are
    written there and the command names it (pytest's ``@file``)."""
    argv = [layout.python, "-P", f"{layout.source}/mptcp_nvme/guest/launch.py",
            "--rootdir", layout.source, "--results-dir", layout.results, *extra_args]
    # Files, not node ids: the guest collects them and the host asks for one test at a
    # time; vng hands the command over on the kernel command line (2048 bytes on x86),
    # which a few dozen node ids would overflow (the kernel then loses root=), and 17
    # files did on Debian's 7.3.4 (a fortify panic in early boot): hence the file.
    files = dict.fromkeys(str(arg).partition("::")[0] for arg in test_args)
    paths = [guest_path(arg, layout.source, shared) for arg in files]
    if args_file:
        host, guest = args_file
        Path(host).write_text("".join(f"{path}\n" for path in paths))
        paths = [f"@{guest}"]
    argv += paths
    return (f"cd {layout.source} && PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 exec {shlex.join(argv)} "
            f"{REQUEST_FD}<&0 {REPLY_FD}>&1 1>&2")


def guest_path(arg, source=GUEST_SOURCE_DIR, shared=None):
    """Map a host test path (or nodeid) inside the source tree, or inside a folder of
    ``shared`` ({host folder: guest folder}), to the guest's view."""
    path, sep, rest = str(arg).partition("::")
    absolute = Path(path).resolve()
    for host, guest in {**(shared or {}), SOURCE_DIR: source}.items():
        if Path(host).resolve() in (absolute, *absolute.parents):
            return f"{guest}/{absolute.relative_to(Path(host).resolve())}{sep}{rest}"
    raise ValueError(f"{arg}: selftests must live inside {SOURCE_DIR} to be shared "
                     "with the guest")


class NotRun(Exception):
    """The guest is well but could not run the test (it did not collect it)."""


class GuestSession:
    """One booted guest running the agent; ``run()`` executes one test in it."""

    def __init__(self, vm_config, boot_timeout):
        self.vm = VM(vm_config)
        self.boot_timeout = boot_timeout
        self.booted_in = None
        self.collect_errors = []

    def start(self):
        started = time.monotonic()
        self.vm.start()
        try:
            self._receive("ready", self.boot_timeout, "the guest agent to start")
        except BaseException:
            self.vm.stop(grace=0)
            raise
        self.booted_in = time.monotonic() - started
        return self

    def _receive(self, event, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            line = self.vm.read_line(deadline - time.monotonic(), what)
            if not line.startswith(MARK):
                self.vm._log(f"[guest stdout] {line}")
                continue
            message = json.loads(line[len(MARK):])
            if message.get("event") == event:
                return message
            if message.get("event") == "collect-error":
                self.collect_errors.append(f"{message['nodeid']}: {message['text']}")

    def run(self, nodeid, next_nodeid, timeout):
        """Serialized reports of one test; VMError if the guest dies or overruns, NotRun
        (with the guest's collection errors) if it did not collect the test."""
        self.vm.fatal = None     # a fatal console line counts for the test it happens in
        self.vm.send_line(json.dumps({"op": "run", "nodeid": nodeid, "next": next_nodeid}))
        result = self._receive("result", timeout, f"the result of {nodeid}")
        if result.get("error"):
            raise NotRun("\n".join([result["error"], *self.collect_errors]))
        return result["reports"]

    def sysrq(self, keys="wl", timeout=15.0):
        """Ask the guest (whose test overran) to dump blocked tasks and CPU backtraces
        to the console; True when it confirmed. The console lines follow."""
        try:
            self.vm.send_line(json.dumps({"op": "sysrq", "keys": keys}))
            self._receive("sysrq-done", timeout, "the guest to run sysrq")
        except VMError:
            return False
        return True

    @property
    def alive(self):
        return self.vm.alive

    def close(self, grace=60.0):
        self.vm.stop(grace=grace)
