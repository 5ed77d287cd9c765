"""Booting a kernel in virtme-ng (``vng`` as a subprocess) and talking to the guest command.

The guest command's stdin and stdout are vng's (virtio-serial ports); with ``--verbose``
the kernel console goes to vng's stderr, which is kept as the console log. On timeout,
Ctrl-C or exit the whole vng/qemu process tree is reaped.
"""

import collections
import dataclasses
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

from mptcp_nvme.host.inputs import tools
from mptcp_nvme.errors import UsageError
from mptcp_nvme.host.inputs.rootfs import cache_dir
from mptcp_nvme.vocabulary import ACCELS

KVM_PROBE_TIMEOUT = 40.0
CONSOLE_TAIL_LINES = 40


class VMError(Exception):
    """The guest died, hung or never came up; the message ends with the console tail."""


class BootFailed(VMError):
    """The guest never got as far as its agent being ready (or could not be set up)."""


class VMTimeout(VMError):
    """The guest did not answer in time (it may still be alive)."""


class GuestCrashed(VMError):
    """The guest kernel reported a fatal error (an Oops kills the task it hit, which may
    be the guest agent) and the awaited answer did not follow."""


# Console lines after which a task, or the whole kernel, is dead: no answer may come.
FATAL = re.compile(r"Kernel panic - not syncing|kernel BUG at |Oops: |BUG: unable to handle|"
                   r"general protection fault")
FATAL_GRACE = 10.0       # seconds the guest still gets to answer after such a line


def require_host_tools():
    tools.require(("vng", "qemu-system-x86_64", "modprobe", "depmod", "busybox"),
                  "run ./ci/setup")


def kill_tree(pid, grace=3.0):
    """Terminate a process and all its descendants, then kill what is left."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)


def _kvm_probe_key():
    uname = os.uname()
    qemu = shutil.which("qemu-system-x86_64") or "none"
    return f"{uname.nodename}/{uname.release}/{qemu}:{int(os.stat(qemu).st_mtime) if qemu != 'none' else 0}"


def probe_kvm(image):
    """Can this host run a guest under KVM? A real short boot decides; cached per host.

    /dev/kvm opening is not enough: on some hosts every guest dies with "KVM internal
    error" and qemu hangs. The probe boots ``image`` with no root filesystem and expects
    the kernel to get as far as panicking for lack of one.
    """
    cache_file = cache_dir() / "kvm-probe.json"
    key = _kvm_probe_key()
    try:
        cached = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return cached[key]["usable"], cached[key]["reason"]
    usable, reason = _boot_probe(image)
    cached[key] = {"usable": usable, "reason": reason}
    cache_file.write_text(json.dumps(cached, indent=2) + "\n")
    return usable, reason


def _boot_probe(image):
    try:
        with open("/dev/kvm", "rb"):
            pass
    except OSError as err:
        return False, f"/dev/kvm: {err.strerror}"
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1",
            "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
            "-kernel", str(image), "-append", "console=ttyS0 panic=-1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    deadline = time.monotonic() + KVM_PROBE_TIMEOUT
    verdict = (False, f"KVM guest did not finish booting within {KVM_PROBE_TIMEOUT:g}s")
    last = ""
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                verdict = (False, f"qemu exited early (status {proc.wait()}): {last}")
                break
            last = line.decode(errors="replace").strip()
            if b"KVM internal error" in line:
                verdict = (False, "KVM internal error (emulation failure)")
                break
            if b"Kernel panic" in line or b"Unable to mount root" in line:
                verdict = (True, "a probe guest booted under KVM")
                break
    finally:
        kill_tree(proc.pid, grace=1.0)
    return verdict


def resolve_accel(accel, image):
    """``auto`` becomes kvm when the probe boot works, else tcg."""
    if accel not in ACCELS:
        raise UsageError(f"--accel {accel}: choose one of {', '.join(ACCELS)}")
    if accel != "auto":
        return accel, f"--accel {accel}"
    usable, reason = probe_kvm(image)
    return ("kvm" if usable else "tcg"), reason


@dataclasses.dataclass
class VMConfig:
    kernel: object                 # kernel.Kernel
    root_image: Path | None        # ext4 image of the guest's root; None: the host's /
    command: str                   # shell command run in the guest
    accel: str = "tcg"             # resolved: kvm or tcg
    tcg_threads: str = "single"    # "multi" only to show why not (ci/probe-tcg-text-patching)
    cpus: int = 2
    memory: str = "2G"
    append: tuple = ()
    rwdirs: dict = dataclasses.field(default_factory=dict)   # guest path -> host path
    rodirs: dict = dataclasses.field(default_factory=dict)
    boot_timeout: float = 180.0
    console_log: Path | None = None
    name: str = "mptcp-nvme"


def vng_argv(cfg):
    """The vng command line for a configuration."""
    kernel = cfg.kernel
    # --force-9p: vng otherwise tries virtiofsd for every shared folder and, where the
    # installed one does not fit, spends ~3 s per folder before falling back to 9p.
    argv = ["vng", "--run", str(kernel.tree or kernel.image), "--verbose", "--force-9p",
            "--name", cfg.name, "--cpus", str(cfg.cpus), "--memory", cfg.memory]
    if cfg.root_image is not None:
        argv += ["--root-disk", str(cfg.root_image), "--root-fstype", "ext4"]
    if cfg.accel == "tcg":
        # One host thread for all vCPUs: multi-threaded TCG (QEMU 7.2 and 10.0 alike) lets
        # a vCPU run stale code while another patches kernel text, and the guest dies
        # with "Oops: int3" at a static-key site (ci/probe-tcg-text-patching shows it).
        argv += ["--disable-kvm", f"--qemu-opts=-accel tcg,thread={cfg.tcg_threads}"]
    for guest, host in cfg.rwdirs.items():
        argv += ["--rwdir", f"{guest}={host}"]
    for guest, host in cfg.rodirs.items():
        argv += ["--rodir", f"{guest}={host}"]
    for option in cfg.append:
        argv += ["--append", option]
    return argv + ["--", cfg.command]


class VM:
    """A running guest: a context manager that always reaps the vng/qemu tree."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.proc = None
        self._stdout = queue.Queue()
        self._tail = collections.deque(maxlen=CONSOLE_TAIL_LINES)
        self._console_lines = []       # everything the console said, for crash extraction
        self.fatal = None              # (monotonic time, line) of the first fatal line
        self._threads = []
        self._console = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        argv = vng_argv(self.cfg)
        if self.cfg.console_log:
            self._console = open(self.cfg.console_log, "a", buffering=1, errors="replace")
            self._console.write(f"# {shlex.join(argv)}\n")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=tools.tool_env(), start_new_session=True)
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, None), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _pump(self, pipe, lines):
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\r\n")
            if lines is not None:
                lines.put(line)
            else:
                self._log(line)
        if lines is not None:
            lines.put(None)

    def _log(self, line):
        self._tail.append(line)
        self._console_lines.append(line)
        if self.fatal is None and FATAL.search(line):
            self.fatal = (time.monotonic(), line)
        if self._console:
            self._console.write(line + "\n")

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def console_tail(self):
        return "\n".join(self._tail)

    def console_mark(self):
        """A position in the console output, for console_since()."""
        return len(self._console_lines)

    def console_since(self, mark=0, settle=2.0):
        """Console lines from ``mark`` on (after letting the console reader catch up)."""
        for thread in self._threads[1:]:
            thread.join(timeout=settle if not self.alive else 0)
        return list(self._console_lines[mark:])

    def send_line(self, line):
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as err:
            raise self.error(f"cannot write to the guest ({err})") from None

    def read_line(self, timeout, what):
        """The next stdout line of the guest command; VMError on timeout or guest exit,
        GuestCrashed when the kernel reported a fatal error FATAL_GRACE seconds ago."""
        deadline = time.monotonic() + max(timeout, 0)
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._stdout.get(timeout=max(min(left, 1.0), 0))
                break
            except queue.Empty:
                if self.fatal and time.monotonic() - self.fatal[0] > FATAL_GRACE:
                    raise self.error(f"the guest kernel reported '{self.fatal[1].strip()}' and "
                                     f"{what} did not follow within {FATAL_GRACE:g}s",
                                     GuestCrashed) from None
                if left <= 0:
                    raise self.error(f"timed out after {timeout:g}s waiting for {what}",
                                     VMTimeout) from None
        if line is None:
            self._stdout.put(None)
            status = self.proc.wait()
            raise self.error(f"guest exited (vng status {status}) while waiting for {what}")
        return line

    def error(self, message, kind=VMError):
        if not self.alive:
            for thread in self._threads[1:]:
                thread.join(timeout=2.0)   # let the console catch up before quoting it
        return kind(f"{message}\n--- console tail ---\n{self.console_tail()}")

    def wait_console_quiet(self, quiet=1.0, timeout=15.0):
        """Wait until the console has been silent for ``quiet`` seconds (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        seen, since = len(self._console_lines), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.1)
            if len(self._console_lines) != seen:
                seen, since = len(self._console_lines), time.monotonic()

    def stop(self, grace=30.0):
        """Close the guest's stdin, wait for it to power off, then reap whatever is left."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        kill_tree(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=5.0)
        if self._console:
            self._console.close()
            self._console = None
