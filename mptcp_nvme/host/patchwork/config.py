"""The patchwork bot's one TOML file, checked whole before anything runs: unknown keys,
a missing project, a bad URL, a tree that is not a git kernel tree or an unset token
variable are one line each (UsageError, exit 2).

    [patchwork]
    url = "https://patchwork.kernel.org"   # the instance, without /api
    api = "1.3"                            # 1.1, 1.2 or 1.3
    project = "netdevbpf"                  # link name
    delegate = "someone"                   # optional: only series delegated to them
    token_env = "PATCHWORK_TOKEN"          # the variable holding the API token
    context = "mptcp-nvme"                 # the checks' context

    [series]
    ours = ["drivers/nvme/", "include/linux/nvme*", ...]   # default: the list below

    [results]
    dir = "/srv/mptcp-nvme"                # a folder per series run, pages, the state
    url = "https://ci.example.org/mptcp-nvme"   # where dir is served (checks link there)

    [trees.net-next]                       # the subject tag [PATCH net-next ...]
    path = "/srv/linux"                    # a git kernel work tree
    branch = "net-next/main"               # the base: a revision of that tree
    tests = ["selftests/test_datapath.py"] # optional: the selection (default: all)
    args = ["--expect-all-features"]       # optional: more 'mptcp-nvme run' options
    matrix = ["--paths", "4", "--loss", "0"]   # optional: 'mptcp-nvme matrix' options;
                                           # it measures base+series against the base
                                           # when the tests found nothing new broken

    [flaky]                                # known-flaky tests: a failure there is a warning
    "selftests/test_churn.py::test_connect_cycles" = "https://lore.kernel.org/... (why)"
"""

import dataclasses
import fnmatch
import os
import re
import tomllib
import urllib.parse
from pathlib import Path

from mptcp_nvme.errors import UsageError

OURS = ("drivers/nvme/", "include/linux/nvme*", "net/mptcp/", "Documentation/nvme/",
        "tools/testing/selftests/net/mptcp/")
APIS = ("1.1", "1.2", "1.3")
KEYS = {"patchwork": {"url", "api", "project", "delegate", "token_env", "context"},
        "series": {"ours"}, "results": {"dir", "url"}, "trees": None, "flaky": None}
TREE_KEYS = {"path", "branch", "tests", "args", "matrix"}
# what the bot itself chooses for each run: not for a tree's args or matrix
BOT_OPTIONS = ("--kernel", "--results-dir", "--baseline-kernel", "--resume")
_CONTEXT = re.compile(r"[A-Za-z0-9_-]{1,255}")


@dataclasses.dataclass(frozen=True)
class Tree:
    tag: str
    path: Path
    branch: str
    tests: tuple
    args: tuple
    matrix: tuple | None = None      # 'mptcp-nvme matrix' options; None: no matrix


@dataclasses.dataclass(frozen=True)
class BotConfig:
    source: Path
    url: str
    api: str
    project: str
    delegate: str | None
    token_env: str
    context: str
    ours: tuple
    results_dir: Path
    results_url: str
    trees: tuple             # Tree, in the file's order (tried in it without a tag)
    flaky: dict              # nodeid -> reason

    @property
    def token(self):
        return os.environ[self.token_env]

    @property
    def state_path(self):
        return self.results_dir / "patchwork.sqlite"

    def tree(self, tag):
        return next((t for t in self.trees if t.tag == tag), None)

    def touches_ours(self, paths):
        """Whether any of ``paths`` (files a series changes) is one of ours."""
        return any(path.startswith(rule) if rule.endswith("/") else fnmatch.fnmatch(path, rule)
                   for path in paths for rule in self.ours)

    def flaky_reason(self, nodeid):
        """The known-flaky entry covering ``nodeid`` (exact, or its function for every
        parameter set), else None."""
        return self.flaky.get(nodeid) or self.flaky.get(nodeid.split("[", 1)[0])


def load(path, environ=os.environ):
    """The bot's configuration from ``path``; UsageError naming the first problem."""
    where = str(path)
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise UsageError(f"{where}: cannot read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{where}: not TOML: {err}") from None
    _known(where, data)
    pw = data.get("patchwork") or {}
    url = _url(where, pw.get("url"))
    api = str(pw.get("api", "1.3"))
    if api not in APIS:
        raise UsageError(f"{where}: patchwork.api {api!r}: one of {', '.join(APIS)}")
    project = _text(where, pw, "project", required=True)
    token_env = _text(where, pw, "token_env", default="PATCHWORK_TOKEN")
    if not environ.get(token_env):
        raise UsageError(f"{where}: the token variable {token_env} is not set "
                         "(patchwork.token_env names it)")
    context = _text(where, pw, "context", default="mptcp-nvme")
    if not _CONTEXT.fullmatch(context):
        raise UsageError(f"{where}: patchwork.context {context!r}: letters, digits, - and _ only")
    results = data.get("results") or {}
    if not results.get("dir"):
        raise UsageError(f"{where}: results.dir is missing (where runs and pages go)")
    return BotConfig(
        source=Path(path), url=url, api=api, project=project,
        delegate=_text(where, pw, "delegate", default=None), token_env=token_env,
        context=context, ours=_strings(where, data.get("series") or {}, "series.ours", OURS),
        results_dir=Path(results["dir"]).expanduser().resolve(),
        results_url=_url(where, results.get("url"), "results.url").rstrip("/"),
        trees=_trees(where, data.get("trees") or {}), flaky=_flaky(where, data.get("flaky") or {}))


def _known(where, data):
    for section, value in data.items():
        if section not in KEYS:
            raise UsageError(f"{where}: unknown section [{section}] "
                             f"(known: {', '.join(sorted(KEYS))})")
        if not isinstance(value, dict):
            raise UsageError(f"{where}: [{section}] must be a table")
        allowed = KEYS[section]
        unknown = sorted(set(value) - allowed) if allowed is not None else []
        if unknown:
            raise UsageError(f"{where}: unknown key {section}.{unknown[0]} "
                             f"(known: {', '.join(sorted(allowed))})")


def _url(where, value, name="patchwork.url"):
    parsed = urllib.parse.urlsplit(value) if isinstance(value, str) else None
    if not parsed or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"{where}: {name} {value!r} is not an http(s) URL")
    return value.rstrip("/")


def _text(where, table, key, required=False, default=""):
    value = table.get(key, default)
    if required and not value:
        raise UsageError(f"{where}: patchwork.{key} is missing")
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: patchwork.{key} must be a string")
    return value or default


def _strings(where, table, name, default):
    value = table.get(name.rsplit(".", 1)[-1], default)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: {name} must be a list of strings")
    return tuple(value)


def _trees(where, table):
    if not table:
        raise UsageError(f"{where}: no [trees.<tag>] table: the bot needs a base tree")
    trees = []
    for tag, entry in table.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: [trees.{tag}] must be a table")
        unknown = sorted(set(entry) - TREE_KEYS)
        if unknown:
            raise UsageError(f"{where}: unknown key trees.{tag}.{unknown[0]} "
                             f"(known: {', '.join(sorted(TREE_KEYS))})")
        path = Path(str(entry.get("path") or "")).expanduser()
        if not entry.get("path") or not (path / ".git").exists() or not (path / "Kconfig").is_file():
            raise UsageError(f"{where}: trees.{tag}.path {entry.get('path')!r} is not a git "
                             "kernel work tree")
        branch = entry.get("branch") or "HEAD"
        if not isinstance(branch, str):
            raise UsageError(f"{where}: trees.{tag}.branch must be a string")
        args = _options(where, entry, f"trees.{tag}.args", "run")
        matrix = _options(where, entry, f"trees.{tag}.matrix", "matrix") \
            if "matrix" in entry else None
        trees.append(Tree(tag, path.resolve(), branch,
                          _strings(where, entry, f"trees.{tag}.tests", ()), args, matrix))
    return tuple(trees)


def _options(where, entry, name, command):
    """A tree's 'mptcp-nvme COMMAND' options, parsed as that command parses them."""
    from mptcp_nvme import options
    from mptcp_nvme.errors import ArgumentParser
    values = _strings(where, entry, name, ())
    chosen = next((v for v in values if v.split("=", 1)[0] in BOT_OPTIONS), None)
    if chosen:
        raise UsageError(f"{where}: {name}: {chosen.split('=', 1)[0]} is the bot's to choose")
    parser = ArgumentParser(prog=f"{name} (mptcp-nvme {command})", add_help=False)
    options.add_arguments(parser, command)
    try:
        parser.parse_args(values)
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None
    return values


def _flaky(where, table):
    for nodeid, reason in table.items():
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{where}: flaky {nodeid!r} needs a reason or a link")
    return dict(table)
