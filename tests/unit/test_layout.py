"""The architecture the folders show: the guest side never imports the host side, and
selftests import only the guest API."""

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUEST_SIDE = sorted((REPO / "mptcp_nvme/guest").glob("*.py")) + sorted((REPO / "selftests").glob("*.py"))
SHARED = [REPO / "mptcp_nvme" / name for name in
          ("channel.py", "errors.py", "poll.py", "options.py", "ktap.py")]


def imported(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


@pytest.mark.parametrize("path", GUEST_SIDE + SHARED, ids=lambda p: str(p.relative_to(REPO)))
def test_guest_and_shared_code_never_import_the_host_side(path):
    for module, names in imported(path):
        assert not module.startswith("mptcp_nvme.host"), f"{path.name} imports {module}"
        assert not (module == "mptcp_nvme" and "host" in names), f"{path.name} imports host"


@pytest.mark.parametrize("path", sorted((REPO / "selftests").glob("*.py")), ids=lambda p: p.name)
def test_selftests_use_the_guest_api_not_the_plugin(path):
    assert all(module != "mptcp_nvme.plugin" for module, _ in imported(path))


def test_only_the_runner_and_the_vm_launcher_start_processes():
    """Everything else goes through mptcp_nvme.proc (cmd/bkg)."""
    starters = sorted(str(p.relative_to(REPO)) for p in (REPO / "mptcp_nvme").rglob("*.py")
                      if any(module == "subprocess" for module, _ in imported(p)))
    assert starters == ["mptcp_nvme/host/vm.py", "mptcp_nvme/proc.py"], starters


def test_the_guest_starts_without_pyroute2():
    """What the guest imports before its first test (plugin, agent, the selftests'
    conftest and a test module that builds no network) leaves pyroute2 out: under TCG
    its import takes as long as pytest's own (ci/bench-boot)."""
    from mptcp_nvme import proc

    script = ("import importlib.util, sys\n"
              f"sys.path.append({str(REPO)!r})\n"
              "import mptcp_nvme.plugin, mptcp_nvme.guest.agent\n"
              "for name in ('conftest', 'test_modules'):\n"
              f"    spec = importlib.util.spec_from_file_location(name, {str(REPO)!r} + f'/selftests/{{name}}.py')\n"
              "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2'))\n")
    assert proc.cmd([sys.executable, "-P", "-c", script]).stdout.strip() == "[]"
