"""options.py: one declaration per option; the CLI, pytest and the guest agree."""

import argparse
import json
import re
from pathlib import Path

import pytest
from _pytest.config.argparsing import Parser

from mptcp_nvme import options, plugin
from mptcp_nvme.host import cli
from tests import REPO


def cli_flags(command):
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in sub.choices[command]._actions for flag in action.option_strings}


def pytest_flags():
    parser = Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    group = parser.getgroup("mptcp_nvme")
    return {name: opt for opt in group.options for name in opt.names()}


def test_every_option_is_declared_once_in_the_source():
    sources = "".join(p.read_text() for p in (REPO / "mptcp_nvme").rglob("*.py")
                      if p.name != "options.py")
    for option in options.OPTIONS:
        assert not re.search(rf"add_(argument|option)\(\s*\"{option.flag_name}\"", sources), option.name


@pytest.mark.parametrize("command", ["setup", "run", "script", "matrix"])
def test_cli_and_pytest_views_agree(command):
    flags, in_pytest = cli_flags(command), pytest_flags()
    for option in options.OPTIONS:
        if command not in option.commands:
            assert option.flag_name not in flags
            continue
        action = flags[option.flag_name]
        assert action.help == option.help and action.default == option.argparse_kwargs()["default"]
        if option.short:
            continue
        if not options.for_pytest(option):
            assert option.flag_name not in in_pytest, option.name   # the matrix's own
            continue
        attrs = in_pytest[option.flag_name].attrs()
        assert attrs["help"] == option.help and attrs.get("default") == action.default
        assert attrs.get("type") == action.type


def test_cli_values_round_trip_through_the_pytest_argv():
    args = cli.build_parser().parse_args([
        "run", "--trtype", "mptcp", "--paths", "4", "--paths", "1", "--loss", "1", "--cpus", "3",
        "--allow-missing", "tls:mptcp", "--expect-all-features", "--retry-failed", "2",
        "--topology", str(REPO / "topologies/2path.toml")])
    chosen = options.values(args)
    parser = Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    parsed = parser.parse(options.to_argv(chosen))
    del chosen["vms"]                              # -n: pytest-xdist's own option
    assert {k: v for k, v in options.values(parsed).items() if k in chosen} == chosen


def test_the_guest_gets_a_files_content_not_its_host_path(tmp_path):
    topology = tmp_path / "elsewhere.toml"
    topology.write_text('[[link]]\nrate = "10mbit"\n')
    chosen = {"trtype": ["tcp"], "topology": str(topology), "kernel": "/x", "tls": True}
    text = options.guest_config(chosen)
    data = json.loads(text)
    assert "kernel" not in data and data["trtype"] == ["tcp"] and data["tls"] is True
    assert data["topology"] == topology.read_text() and str(tmp_path) not in text
    namespace, scratch = argparse.Namespace(), tmp_path / "guest"
    scratch.mkdir()
    options.apply_guest_config(text, namespace, scratch)
    assert Path(namespace.topology).read_text() == topology.read_text()
    assert Path(namespace.topology).parent == scratch


@pytest.mark.parametrize("argv, expected", [
    (["run", "--cpus", "0"], "must be 1..64, not 0"),
    (["run", "--memory", "lots"], "must be like 2G or 512M"),
    (["run", "--paths", "9"], "must be 1..8, not 9"),
    (["run", "-n", "0"], "must be 1..16 or auto, not '0'"),
    (["run", "--test-timeout", "0"], "must be >= 1, not 0"),
    (["run", "--topology", "/nonexistent.toml"], "cannot read"),
])
def test_bad_values_are_refused_at_once(argv, expected):
    from mptcp_nvme.errors import UsageError
    with pytest.raises(UsageError, match=re.escape(expected)):
        cli.build_parser().parse_args(argv)


def test_unknown_guest_option_is_refused(tmp_path):
    from mptcp_nvme.errors import UsageError
    with pytest.raises(UsageError, match="unknown option 'kernel'"):
        options.apply_guest_config('{"kernel": "/x"}', argparse.Namespace(), tmp_path)


@pytest.mark.parametrize("command", ["run", "script", "matrix", "setup"])
def test_defaults_are_what_the_parser_gives_without_arguments(command):
    """cmd_script builds its run from options.defaults('run'), not by parsing again."""
    argv = {"script": [], "run": [], "matrix": [], "setup": []}[command]
    parsed = vars(cli.build_parser().parse_args([command, *argv]))
    assert {k: parsed[k] for k in options.defaults(command)} == options.defaults(command)
