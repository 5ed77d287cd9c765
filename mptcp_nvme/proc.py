"""The one process runner, in the spirit of kselftest's net/lib/py utils.cmd/bkg.

``cmd(argv)`` runs at construction and keeps ``stdout``, ``stderr`` and ``ret``; with
``fail=True`` (the default) a non-zero exit raises CmdExitFailure, which carries the
command object, so its message shows the command, the exit code and both streams. A
command that overruns its ``timeout`` raises CmdTimeout. ``ns`` runs it in a network
namespace (anything with ``argv()``, e.g. topology.Netns). ``log`` appends the command
and its output to a file (a test's artifacts). ``bkg(argv)`` is the same object started
in the background, a context manager that terminates it (its process group) on exit.

Every module starts processes through here; only the VM launcher keeps its own Popen
(it pumps vng's streams line by line for the guest channel and the console).
"""

import os
import shlex
import signal
import subprocess

from mptcp_nvme.errors import SetupError

DEFAULT_TIMEOUT = 60.0


class CmdExitFailure(SetupError):
    """A command exited non-zero (or could not start); ``cmd`` is the command object."""

    def __init__(self, command, why=None):
        self.cmd = command
        output = (command.stderr or "").strip() or (command.stdout or "").strip()
        detail = why or f"exit {command.ret}"
        super().__init__(f"{command.text} failed ({detail})" + (f": {output[-2000:]}" if output else ""))


class CmdTimeout(CmdExitFailure):
    """A command did not finish within its timeout (it was killed)."""


class cmd:
    """Run ``argv`` to completion (or start it, ``background=True``)."""

    def __init__(self, argv, *, fail=True, ns=None, timeout=DEFAULT_TIMEOUT, input=None,
                 log=None, env=None, cwd=None, background=False, output=None):
        self.argv = [*(ns.argv() if ns is not None else ()), *map(str, argv)]
        self.text = shlex.join(self.argv)
        self.fail, self.timeout, self.log = fail, timeout, log
        self.stdout = self.stderr = None
        self.ret = None
        self.proc = None
        try:
            if background:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL,
                    stdout=output if output is not None else subprocess.PIPE,
                    stderr=subprocess.STDOUT if output is not None else subprocess.PIPE,
                    text=True, errors="replace", env=env, cwd=cwd, start_new_session=True)
                return
            done = subprocess.run(self.argv, input=input, capture_output=True, text=True,
                                  errors="replace", env=env, cwd=cwd, timeout=timeout,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as err:
            self.ret, self.stdout, self.stderr = -9, _text(err.stdout), _text(err.stderr)
            self._write_log()
            raise CmdTimeout(self, f"timed out after {timeout:g}s") from None
        except OSError as err:
            self.ret, self.stdout, self.stderr = 127, "", err.strerror or str(err)
            self._write_log()
            if fail:
                raise CmdExitFailure(self, f"cannot start: {err.strerror or err}") from err
            return
        self.ret, self.stdout, self.stderr = done.returncode, done.stdout or "", done.stderr or ""
        self._write_log()
        if fail and self.ret != 0:
            raise CmdExitFailure(self)

    def process(self, terminate=False):
        """Wait for (or with ``terminate``, stop) a background command; its output."""
        if self.proc is None or self.ret is not None:
            return self
        if terminate:
            self._signal(signal.SIGTERM)
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.stdout, self.stderr = self.proc.communicate()
            self.ret = self.proc.returncode
            self._write_log()
            raise CmdTimeout(self, f"timed out after {self.timeout:g}s") from None
        self.ret = self.proc.returncode
        self._write_log()
        if self.fail and self.ret != 0 and not terminate:
            raise CmdExitFailure(self)
        return self

    def _signal(self, signum):
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _write_log(self):
        if self.log:
            with open(self.log, "a", errors="replace") as out:
                out.write(f"$ {self.text}\n# exit {self.ret}\n{self.stdout or ''}{self.stderr or ''}\n")


def _text(data):
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def stream(argv, on_line, *, env=None, cwd=None):
    """Run ``argv`` with stdout and stderr merged, handing each line to ``on_line``;
    the exit code (a build: its output is long and wanted as it comes)."""
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", env=env, cwd=cwd) as child:
            for line in child.stdout:
                on_line(line)
        return child.returncode
    except OSError as err:
        on_line(f"{shlex.join(map(str, argv))}: cannot start: {err.strerror or err}\n")
        return 127


class bkg(cmd):
    """A background command: ``with bkg(argv) as proc:`` ... terminated on exit."""

    def __init__(self, argv, *, exit_wait=False, **kwargs):
        kwargs.setdefault("fail", False)
        super().__init__(argv, background=True, **kwargs)
        self.exit_wait = exit_wait

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process(terminate=not self.exit_wait)
        return False

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def poll(self):
        """The exit code once it ended, else None."""
        return self.proc.poll() if self.proc is not None else self.ret

    def interrupt(self):
        """SIGINT to its process group, not waited for: a command that reports on it
        (fio prints its results) ends early; process() then collects its output."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGINT)

    def stop(self, grace=5.0):
        """SIGTERM to its process group, SIGKILL after ``grace`` seconds; its exit code."""
        if self.proc is None:
            return self.ret
        self._signal(signal.SIGTERM)
        try:
            self.ret = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.ret = self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return self.ret
