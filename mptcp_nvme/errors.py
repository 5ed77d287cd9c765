"""Errors the CLI turns into one clear line and an exit code, never a traceback."""


class UsageError(Exception):
    """Bad input from the user (option, path, file contents): exit code 2."""

    exit_code = 2


class SetupError(Exception):
    """The environment cannot do what was asked (missing tool, failed build): exit code 1."""

    exit_code = 1
