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

from .errors import SetupError

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
                 log=None, env=None, cwd=None, background=False):
        self.argv = [*(ns.argv() if ns is not None else ()), *map(str, argv)]
        self.text = shlex.join(self.argv)
        self.fail, self.timeout, self.log = fail, timeout, log
        self.stdout = self.stderr = None
        self.ret = None
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                env=env, cwd=cwd, start_new_session=True)
        except OSError as err:
            self.ret = 127
            self.stderr = err.strerror
            if fail:
                raise CmdExitFailure(self, f"cannot start: {err.strerror}") from err
            return
        if not background:
            self.process(input=input)

    def process(self, input=None, terminate=False):
        """Wait for (or with ``terminate``, stop) the command and collect its output."""
        if self.ret is not None and self.proc is None:
            return self
        if terminate:
            self._signal(signal.SIGTERM)
        try:
            self.stdout, self.stderr = self.proc.communicate(input=input, timeout=self.timeout)
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


class bkg(cmd):
    """A background command: ``with bkg(argv) as proc:`` ... terminated on exit."""

    def __init__(self, argv, *, exit_wait=False, **kwargs):
        kwargs.setdefault("fail", False)
        super().__init__(argv, background=True, **kwargs)
        self.exit_wait = exit_wait

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.ret is None:
            self.process(terminate=not self.exit_wait)
        return False

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def poll(self):
        return self.proc.poll() if self.proc is not None else self.ret
