"""mptcp_nvme.proc: the one process runner (real processes, no kernel)."""

import sys

import pytest

from mptcp_nvme import proc


def test_a_command_keeps_its_streams_and_exit_code():
    done = proc.cmd([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert (done.ret, done.stdout, done.stderr) == (0, "out\n", "err\n")


def test_a_failing_command_says_what_ran_and_what_it_said():
    with pytest.raises(proc.CmdExitFailure) as err:
        proc.cmd(["sh", "-c", "echo broken >&2; exit 3"])
    assert "sh -c" in str(err.value) and "exit 3" in str(err.value) and "broken" in str(err.value)
    assert err.value.cmd.ret == 3
    assert proc.cmd(["sh", "-c", "exit 3"], fail=False).ret == 3


def test_a_missing_program_is_one_error_not_a_traceback():
    with pytest.raises(proc.CmdExitFailure, match="cannot start"):
        proc.cmd(["/nonexistent/tool"])
    assert proc.cmd(["/nonexistent/tool"], fail=False).ret == 127


def test_a_command_that_overruns_is_killed_and_says_so():
    with pytest.raises(proc.CmdTimeout, match="timed out after 0.5s"):
        proc.cmd(["sleep", "30"], timeout=0.5)


def test_the_log_gets_the_command_and_its_output(tmp_path):
    log = tmp_path / "cmd.log"
    proc.cmd(["echo", "hello"], log=log)
    assert log.read_text() == "$ echo hello\n# exit 0\nhello\n\n"


def test_a_background_command_is_stopped_with_its_process_group():
    with proc.bkg(["sh", "-c", "sleep 30 & sleep 30"]) as running:
        assert running.poll() is None and running.pid
    assert running.ret is not None and running.ret != 0


def test_a_background_command_can_be_waited_for():
    with proc.bkg(["sh", "-c", "echo done"], exit_wait=True) as running:
        pass
    assert (running.ret, running.stdout) == (0, "done\n")


def test_stream_hands_over_every_line():
    lines = []
    assert proc.stream(["sh", "-c", "echo a; echo b >&2; exit 2"], lines.append) == 2
    assert sorted(lines) == ["a\n", "b\n"]
    assert proc.stream(["/nonexistent/tool"], lines.append) == 127 and "cannot start" in lines[-1]


def test_interrupt_lets_a_command_report_what_it_did_before_ending(tmp_path):
    # Python rather than a shell trap: a shell cannot trap a SIGINT it was started with
    # ignored (a CI job in the background), a program's own handler can, as fio's does.
    from mptcp_nvme.poll import wait_for
    ready = tmp_path / "ready"
    script = ("import signal, sys, time\n"
              "def done(*_):\n    print('interrupted'); sys.exit(0)\n"
              "signal.signal(signal.SIGINT, done)\n"
              f"print('started', flush=True); open({str(ready)!r}, 'w').close()\n"
              "while True: time.sleep(0.05)\n")
    with proc.bkg([sys.executable, "-c", script], timeout=30) as running:
        wait_for(ready.exists, "the command's SIGINT handler", 10)
        running.interrupt()
        done = running.process()
    assert done.ret == 0 and done.stdout.split() == ["started", "interrupted"]
    running.interrupt()             # ended: nothing to signal, no error
