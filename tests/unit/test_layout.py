"""The architecture the folders show: the guest side never imports the host side, the
shared modules (mptcp_nvme/*.py) import neither, the host never loads pyroute2, and
selftests import only the guest API."""

import ast
import sys

import pytest
from tests import REPO

GUEST_SIDE = sorted((REPO / "mptcp_nvme/guest").rglob("*.py")) + sorted((REPO / "selftests").rglob("*.py"))
# plugin.py is pytest's entry point for both sides: it wires them, lazily, and is the one
# module at this level that may name either.
SHARED = sorted(p for p in (REPO / "mptcp_nvme").glob("*.py") if p.name != "plugin.py")
HOST_SIDE = sorted((REPO / "mptcp_nvme/host").rglob("*.py"))


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


@pytest.mark.parametrize("path", SHARED, ids=lambda p: p.name)
def test_shared_code_imports_neither_side(path):
    for module, names in imported(path):
        assert not module.startswith(("mptcp_nvme.host", "mptcp_nvme.guest")), f"{path.name} imports {module}"
        assert not (module == "mptcp_nvme" and {"host", "guest"} & set(names)), f"{path.name} imports a side"


def test_the_host_never_loads_pyroute2():
    """The host reads topologies (the shared model) but never builds them: importing every
    host module leaves pyroute2 out, so the host needs it neither installed nor loaded."""
    from mptcp_nvme import proc

    names = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
             for p in HOST_SIDE]
    script = ("import importlib, sys\n"
              f"sys.path.insert(0, {str(REPO)!r})\n"
              f"for name in {names!r}:\n"
              "    importlib.import_module(name)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2'))\n")
    assert proc.cmd([sys.executable, "-P", "-c", script]).stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted((REPO / "selftests").rglob("*.py")), ids=lambda p: p.name)
def test_selftests_use_the_guest_api_only(path):
    """A selftest names what it uses from mptcp_nvme.guest's API (guest/__init__.py),
    not from the modules behind it: those can move without touching a test."""
    from mptcp_nvme import guest

    for module, names in imported(path):
        if module.split(".")[0] != "mptcp_nvme":
            continue
        assert module == "mptcp_nvme.guest", f"{path.name} imports {module}: use mptcp_nvme.guest"
        assert set(names) <= set(guest.API), f"{path.name}: {set(names) - set(guest.API)} not in the API"


def test_every_api_name_resolves_to_what_its_module_defines():
    import importlib

    from mptcp_nvme import guest

    for name, (module, attribute) in guest.API.items():
        value = importlib.import_module(module)
        assert getattr(guest, name) is (getattr(value, attribute) if attribute else value), name


def test_only_the_runner_and_the_vm_launcher_start_processes():
    """Everything else goes through mptcp_nvme.proc (cmd/bkg)."""
    starters = sorted(str(p.relative_to(REPO)) for p in (REPO / "mptcp_nvme").rglob("*.py")
                      if any(module == "subprocess" for module, _ in imported(p)))
    assert starters == ["mptcp_nvme/host/vm/qemu.py", "mptcp_nvme/proc.py"], starters


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


def _vocabulary():
    from mptcp_nvme import vocabulary
    return {name: value for name, value in vars(vocabulary).items()
            if name.isupper() and isinstance(value, (tuple, int, str))}


@pytest.mark.parametrize("path", sorted((REPO / "mptcp_nvme").rglob("*.py")) + GUEST_SIDE,
                         ids=lambda p: str(p.relative_to(REPO)))
def test_each_word_has_one_definition(path):
    """mptcp_nvme/vocabulary.py defines the suite's words: no other module assigns one of
    its names, and no framework module spells out one of its lists (a copy that would
    drift); a selftest's matrix marker may name the values it runs."""
    if path.name == "vocabulary.py":
        return
    words = _vocabulary()
    lists = {value: name for name, value in words.items() if isinstance(value, tuple)}
    tree = ast.parse(path.read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            assert not (isinstance(target, ast.Name) and target.id in words), \
                f"{path.name}:{node.lineno} defines {target.id} again: import it from vocabulary"
    for node in ast.walk(tree) if "selftests" not in path.parts else ():
        if isinstance(node, ast.Tuple) and len(node.elts) > 1:
            try:
                value = ast.literal_eval(node)
            except ValueError:
                continue
            try:
                copied = lists.get(value)
            except TypeError:           # a tuple holding a list or a dict: no word
                continue
            assert copied is None, f"{path.name}:{node.lineno} spells out vocabulary.{copied}"


def test_the_readme_skeleton_uses_the_api():
    """README 'Writing a selftest': its skeleton compiles and names only API names and
    fixtures that selftests/conftest.py defines."""
    import re

    from mptcp_nvme import guest

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Writing a selftest"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("mptcp_nvme"):
            assert node.module == "mptcp_nvme.guest"
            assert {a.name for a in node.names} <= set(guest.API)
    conftest = ast.parse((REPO / "selftests/conftest.py").read_text())
    fixtures = {f.name for f in conftest.body if isinstance(f, ast.FunctionDef)}
    test = next(f for f in tree.body if isinstance(f, ast.FunctionDef))
    assert {a.arg for a in test.args.args} - {"record_property", "request"} <= fixtures
