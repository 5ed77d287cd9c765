"""Errors the CLI turns into one clear line and an exit code, never a traceback."""

import argparse
import sys


class UsageError(Exception):
    """Bad input from the user (option, path, file contents): exit code 2."""

    exit_code = 2


class SetupError(Exception):
    """The environment cannot do what was asked (missing tool, failed build): exit code 1."""

    exit_code = 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def run_command(prog, body, interrupted="interrupted"):
    """``body()``'s exit code; UsageError/SetupError become one line on stderr and their
    exit code, Ctrl-C exit 130. Anything else is a bug and keeps its traceback."""
    try:
        return body()
    except (UsageError, SetupError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130


class SeriesRejected(SetupError):
    """A patch series that does not apply or does not build ('mptcp-nvme series'): a
    verdict of its own, exit code 1."""
