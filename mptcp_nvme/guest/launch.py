"""The guest's entry point: pytest serving tests to the host (agent.py), started lean.

Run as a script with ``python3 -P``, so that the 9p-shared source folder is not first on
sys.path: it is appended after the installed packages. First, every one of the ~500
imports at start-up would look there before finding the module on the root disk, a round
trip to the host per lookup; for the same reason pytest imports the selftests with
``--import-mode=importlib``, which leaves sys.path alone. pytest's plugins that the guest
never uses are not loaded (the host writes JUnit and KTAP; record_property needs
junitxml, which stays). ci/bench-boot measures the start-up.
"""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))

import pytest  # noqa: E402  -- after the path: pytest loads mptcp_nvme.plugin

UNUSED_PLUGINS = ("cacheprovider", "terminal", "doctest", "pastebin", "legacypath",
                  "unittest", "stepwise", "setuponly", "setupplan")


def main(argv):
    disabled = [f"-pno:{name}" for name in UNUSED_PLUGINS]
    return pytest.main([*disabled, "--import-mode=importlib", "-p", "mptcp_nvme.plugin",
                        "--guest-agent", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
