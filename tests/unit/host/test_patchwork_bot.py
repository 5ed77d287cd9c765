"""The patchwork bot (host/patchwork/) against the in-process patchwork, without a VM:
series decided from real events, base trees, checks pending then final, the state kept
across passes and kills, bad config and bad answers as one line. The judge is the real
verdict machinery fed with the recorded runs of the VM test's series (tests/data/series/
breaking): what a base and a breaking series really gave."""

import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import tests
from mptcp_nvme.errors import SetupError, UsageError
from mptcp_nvme.host.patchwork import bot as bot_mod, config as config_mod
from mptcp_nvme.host.patchwork.client import Patchwork
from mptcp_nvme.host.patchwork.state import State
from mptcp_nvme.host.matrix import document as matrix_json, report as matrix_report
from mptcp_nvme.host.series import compare, verdict
from tests.support.patchwork_server import PatchworkServer
from tests.unit.host import test_series
from tests.unit.host.test_matrix_report import cell as matrix_cell, document as matrix_document
from tests.unit.host.test_series import git

RECORDED = tests.DATA / "series/breaking"
kernel = test_series.kernel        # the fixture: a git kernel tree with the two patches
TOKEN = "s3cret-token-value"


def new_file(path, line):
    """The diff that adds ``path`` holding ``line``."""
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n"
            f"+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n")


HARMLESS = ("Documentation: nvme: a harmless note",
            new_file("Documentation/nvme/series.rst", "A harmless note."))
ELSEWHERE = ("net: a note elsewhere", new_file("Documentation/networking/note.rst", "Not NVMe."))


def breaking_patch(tree):
    """The series that makes configfs reject addr_trtype=tcp, as a diff of ``tree``."""
    git(tree, "checkout", "-q", "series")
    diff = git(tree, "diff", "series~1", "series")
    git(tree, "checkout", "-q", "master")
    return ("nvmet: reject addr_trtype=tcp", diff)


def recorded_judge(calls, matrix_reads=None):
    """judge() with the builds and VM runs replaced by the recorded ones: a series that
    touches configfs.c gives the breaking run, any other the base's. A tree with a matrix
    gets one measured as 'mptcp-nvme matrix' writes it, tcp and mptcp over 4 paths with
    ``matrix_reads`` ({kernel: (tcp MiB/s, mptcp MiB/s)}) for base+series (main) and the
    base (baseline)."""
    def judge(series, out, selection, matrix=None):
        calls.append((series, selection, matrix))
        breaks = any("configfs.c" in p.path.read_text() for p in series.patches)
        for name, source in (("base", "base"), ("series", "series" if breaks else "base")):
            shutil.copytree(RECORDED / source, out / name, dirs_exist_ok=True)
        runs = {name: json.loads((out / name / "results.json").read_text())
                for name in ("base", "series")}
        changes = compare.compare(runs["base"], runs["series"])
        code = compare.exit_code(changes)
        if matrix is None or code:
            return verdict.write(out, series, runs, changes, code)
        cells = [matrix_cell(trtype, 4, "numa", kernel=kernel, reads=(read * 0.99, read, read * 1.01))
                 for kernel, reads in matrix_reads.items()
                 for trtype, read in zip(("tcp", "mptcp"), reads)]
        doc = matrix_document(cells, baseline=True)
        (out / "matrix").mkdir()
        matrix_json.save(doc, out / "matrix/matrix.json")
        matrix_report.write_outputs(doc, out / "matrix")
        return verdict.write(out, series, runs, changes, code, verdict.matrix_summary(out, 0))
    return judge


def write_config(tmp_path, url, tree, extra=""):
    path = tmp_path / "bot.toml"
    path.write_text(textwrap.dedent(f"""\
        [patchwork]
        url = "{url}"
        api = "1.2"
        project = "linux-nvme"
        token_env = "PW_BOT_TOKEN"
        context = "mptcp-nvme"

        [results]
        dir = "{tmp_path / 'results'}"
        url = "https://ci.example.org/mptcp-nvme"

        [trees."nvme-7.4"]
        path = "{tree}"
        branch = "master"
        tests = ["selftests/test_modules.py"]
        """) + extra)
    return path


@pytest.fixture
def world(tmp_path, kernel, monkeypatch):
    monkeypatch.setenv("PW_BOT_TOKEN", TOKEN)
    with PatchworkServer(token=TOKEN) as server:
        server.add_project("linux-nvme")
        config = config_mod.load(write_config(tmp_path, server.url, kernel))
        calls = []
        client = Patchwork(server.url, api=config.api, token=TOKEN, sleep=lambda s: None)
        with State(config.state_path) as state:
            yield server, bot_mod.Bot(config, client, state, recorded_judge(calls)), calls, kernel


def finals(server, series):
    return {p["id"]: [c["state"] for c in server.checks.get(p["id"], [])] for p in series["patches"]}


def test_a_poll_judges_ours_and_leaves_the_rest(world, capsys):
    server, bot, calls, tree = world
    harmless = server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    breaking = server.add_series("linux-nvme", "reject tcp", 1, [breaking_patch(tree)])
    elsewhere = server.add_series("linux-nvme", "not nvme", 1, [ELSEWHERE])
    assert bot.poll() == 2
    assert finals(server, harmless) == {p["id"]: ["pending", "success"] for p in harmless["patches"]}
    assert finals(server, breaking) == {p["id"]: ["pending", "fail"] for p in breaking["patches"]}
    assert finals(server, elsewhere) == {p["id"]: [] for p in elsewhere["patches"]}
    (check,) = [c for c in server.checks[breaking["patches"][0]["id"]] if c["state"] == "fail"]
    assert check["description"] == ("new failure: test_connect[tcp-1path-loss0] (error: setup "
                                    "failed), test_nvme_tcp_modules_load")
    assert check["context"] == "mptcp-nvme"
    assert check["target_url"] == f"https://ci.example.org/mptcp-nvme/series-{breaking['id']}-v1/"
    recorded = json.loads((bot.config.results_dir / f"series-{breaking['id']}-v1/patchwork.json")
                          .read_text())
    assert recorded["check"]["state"] == "fail" and recorded["series"]["id"] == breaking["id"]
    page = (bot.config.results_dir / f"series-{breaking['id']}-v1/index.html").read_text()
    assert "test_nvme_tcp_modules_load" in page and "reject tcp" in page
    index = (bot.config.results_dir / "index.html").read_text()
    assert f"series-{breaking['id']}-v1" in index and f"series-{harmless['id']}-v1" in index
    success = server.checks[harmless["patches"][0]["id"]][-1]["description"]
    assert success == "2 pass, 0 skip; no new failures"
    err = capsys.readouterr().err
    assert f"series {elsewhere['id']} 'not nvme' v1: not ours" in err
    assert [selection for _, selection, _ in calls] == [
        ["selftests/test_modules.py", "--retry-failed", "1"]] * 2
    assert TOKEN not in err
    assert bot.poll() == 0                       # a second poll runs nothing
    assert len(calls) == 2


def test_the_cursor_steps_past_the_last_event_and_survives_a_restart(world, tmp_path):
    server, bot, calls, _ = world
    server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    bot.poll()
    cursor = bot.state.cursor()
    last = max(e["date"] for e in _events(server) if e["category"] == "series-completed")
    assert cursor > last and cursor == bot_mod.step_past(last)
    since = [path for method, path in server.requests if "/events/" in path][-1]
    assert "since=" not in since                  # the first poll had no cursor


def test_an_incomplete_series_waits_for_its_patches(world):
    server, bot, calls, _ = world
    waiting = server.add_series("linux-nvme", "two parts", 1, [HARMLESS, HARMLESS], complete=False)
    assert bot.poll() == 0 and not calls
    assert bot.state.series(waiting["id"]) is None or \
        bot.state.series(waiting["id"])["status"] in ("waiting", "new")
    server.complete(waiting["id"])
    assert bot.poll() == 1
    assert bot.state.series(waiting["id"])["status"] == "done"


def test_a_later_version_stays_on_the_tree_its_first_version_got(world, tmp_path):
    server, bot, calls, tree = world
    other = tmp_path / "other"
    shutil.copytree(tree, other)
    bot.config = config_mod.load(write_config(tmp_path, server.url, tree, textwrap.dedent(f"""
        [trees.net-next]
        path = "{other}"
        branch = "master"
        """)))
    server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS], tag="net-next")
    bot.poll()
    server.add_series("linux-nvme", "a harmless note", 2, [HARMLESS])   # tag dropped
    bot.poll()
    assert [s.tree for s, _, _ in calls] == [other.resolve(), other.resolve()]
    assert [s["tree"] for s in bot.state.all_series()] == ["net-next", "net-next"]


def test_a_series_that_applies_nowhere_fails_naming_why(world):
    server, bot, calls, _ = world
    conflicting = HARMLESS[1].replace("new file mode 100644\n--- /dev/null", "--- a/Documentation/nvme/series.rst") \
        .replace("@@ -0,0 +1 @@", "@@ -1 +1 @@\n-not there")
    broken = server.add_series("linux-nvme", "does not apply", 1, [("nvme: edit", conflicting)])
    bot.poll()
    check = server.checks[broken["patches"][0]["id"]][-1]
    assert check["state"] == "fail" and check["description"].startswith("does not apply: nvme-7.4:")
    folder = bot.config.results_dir / f"series-{broken['id']}-v1"
    assert json.loads((folder / "results.json").read_text())["verdict"] == check["description"]
    assert "does not apply" in (folder / "index.html").read_text()
    assert not calls


def test_a_known_flaky_failure_is_a_warning(world, tmp_path):
    server, bot, calls, tree = world
    bot.config = config_mod.load(write_config(tmp_path, server.url, tree, textwrap.dedent("""
        [flaky]
        "selftests/test_modules.py::test_nvme_tcp_modules_load" = "https://example.org/flake (module race)"
        "selftests/test_datapath.py::test_connect" = "every parameter set"
        """)))
    breaking = server.add_series("linux-nvme", "reject tcp", 1, [breaking_patch(tree)])
    bot.poll()
    check = server.checks[breaking["patches"][0]["id"]][-1]
    assert check["state"] == "warning" and check["description"].startswith("known-flaky failures:")


def test_a_killed_run_is_run_again_then_marked_errored(world):
    server, bot, calls, _ = world
    series = server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    real = bot.judge

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("SIGTERM")
    bot.judge = killed
    with pytest.raises(KeyboardInterrupt):
        bot.poll()
    assert bot.state.series(series["id"])["status"] == "running"
    bot.judge = real
    assert bot.poll() == 1                        # resumed: run again
    assert [c["state"] for c in server.checks[series["patches"][0]["id"]]] == \
        ["pending", "pending", "success"]
    again = server.add_series("linux-nvme", "another", 1, [HARMLESS])
    bot.judge = killed
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            bot.poll()
    bot.poll()
    assert bot.state.series(again["id"])["status"] == "errored"
    assert server.checks[again["patches"][0]["id"]][-1]["state"] == "warning"


def test_a_final_check_is_never_followed_by_pending(world):
    server, bot, calls, _ = world
    series = server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    bot.poll()
    bot.run(series["id"])                         # 'patchwork run ID' again by hand
    assert [c["state"] for c in server.checks[series["patches"][0]["id"]]] == \
        ["pending", "success", "success"]


@pytest.mark.parametrize("kind", [401, 404, 500, "garbled"])
def test_a_bad_answer_is_one_line_and_loses_nothing(world, kind, capsys):
    server, bot, calls, _ = world
    series = server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    server.fail_next("/api/1.2/events/", kind)
    bot_mod.serve(bot, interval=0, passes=1)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("patchwork: pass failed: ") and TOKEN not in line
    assert bot.state.cursor() is None             # nothing read: the cursor stays
    bot_mod.serve(bot, interval=0, passes=1)
    assert server.checks[series["patches"][0]["id"]][-1]["state"] == "success"


def test_a_transient_answer_is_retried(world):
    server, bot, calls, _ = world
    series = server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    server.fail_next(f"/api/1.2/patches/{series['patches'][0]['id']}/checks/", 502)
    bot.poll()
    assert [c["state"] for c in server.checks[series["patches"][0]["id"]]] == ["pending", "success"]


def test_a_second_poller_on_the_same_state_refuses(world):
    _, bot, _, _ = world
    with pytest.raises(UsageError, match="another patchwork bot .* uses this state"):
        State(bot.config.state_path)


@pytest.mark.parametrize("change, message", [
    ("", None),
    ("[patchwork]\nurl = 'ftp://x'\n", "is not an http(s) URL"),
    ("[results]\ndir = '/tmp/x'\nurl = 'https://x'\ncolour = 'red'\n", "unknown key results.colour"),
    ("[extra]\n", "unknown section [extra]"),
])
def test_bad_config_is_one_line_before_anything_runs(tmp_path, kernel, monkeypatch, change,
                                                     message):
    monkeypatch.setenv("PW_BOT_TOKEN", TOKEN)
    path = write_config(tmp_path, "https://patchwork.example.org", kernel)
    if change:
        text = path.read_text()
        section = change.split("\n", 1)[0]
        if section in text:                   # replace that table
            head, _, rest = text.partition(section + "\n")
            rest = rest[rest.find("\n[") + 1:] if "\n[" in rest else ""
            text = head + change + rest
        else:
            text += change
        path.write_text(text)
    if message is None:
        assert config_mod.load(path).project == "linux-nvme"
        return
    with pytest.raises(UsageError, match=re.escape(message)):
        config_mod.load(path)


def test_the_command_says_one_line_and_exits_2(tmp_path, kernel, monkeypatch):
    monkeypatch.delenv("PW_BOT_TOKEN", raising=False)
    path = write_config(tmp_path, "https://patchwork.example.org", kernel)
    done = subprocess.run([sys.executable, "-m", "mptcp_nvme.host.cli", "patchwork", "poll",
                           "--config", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"mptcp-nvme: {path}: the token variable PW_BOT_TOKEN is not "
                                   "set (patchwork.token_env names it)")
    missing = subprocess.run([sys.executable, "-m", "mptcp_nvme.host.cli", "patchwork", "poll",
                              "--config", str(tmp_path / "none.toml")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_check_states_from_verdicts():
    rejected = {"verdict": "patch 1/1 'x' does not apply: error: corrupt patch", "tests": [],
                "kernels": {}, "changes": {}}
    assert bot_mod.check_for(rejected) == ("fail", rejected["verdict"])
    crash = {"tests": [{"nodeid": "t", "series": {}}], "kernels": {"base": {}},
             "changes": {"new_crashes": [["t", "abc123"]], "new_failures": ["t"]}}
    assert bot_mod.check_for(crash) == ("fail", "new crash: t (abc123)")
    unstable = {"tests": [{"nodeid": "a::t", "series": {"flaky": True}}], "kernels": {"base": {}},
                "changes": {}, "totals": {"series": {"pass": 3}}}
    assert bot_mod.check_for(unstable) == ("warning", "unstable (passed on a retry): t")
    skips = {"tests": [], "kernels": {"base": {}}, "changes": {"new_skips": ["a::s"]}}
    assert bot_mod.check_for(skips) == ("warning", "new skips: s")
    # results.json is the only input: an ERROR TIMEOUT reads as such, not as a plain fail
    overran = {"tests": [{"nodeid": "a::t", "series": {"result": "error", "reason": "TIMEOUT"}},
                         {"nodeid": "a::u", "series": {"result": "fail", "reason": None}}],
               "kernels": {"base": {}}, "changes": {"new_failures": ["a::t", "a::u"]}}
    assert bot_mod.check_for(overran) == ("fail", "new failure: t (error: TIMEOUT), u")
    many = {"tests": [], "kernels": {"base": {}},
            "changes": {"new_failures": [f"f::t{i}" for i in range(5)]}}
    assert bot_mod.check_for(many) == ("fail", "new failure: t0, t1, t2 and 2 more")


def test_subject_tags_and_changed_files():
    assert bot_mod.subject_tags("[net-next,v2,1/3] mptcp: x") == ["net-next", "v2", "1/3"]
    assert bot_mod.subject_tags("no tags") == []
    assert bot_mod.changed_files(HARMLESS[1] + ELSEWHERE[1]) == [
        "Documentation/networking/note.rst", "Documentation/nvme/series.rst"]


def _events(server):
    import urllib.request
    with urllib.request.urlopen(server.url + "/api/1.2/events/?per_page=250") as answer:
        return json.loads(answer.read())


def test_the_readme_example_config_loads(tmp_path, kernel, monkeypatch):
    """README 'Running as a patchwork CI bot': its example is a config the bot takes."""
    monkeypatch.setenv("PATCHWORK_TOKEN", TOKEN)
    text = (tests.REPO / "README.md").read_text()
    section = text[text.index("### Running as a patchwork CI bot"):]
    example = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    example = example.replace("/srv/net-next", str(kernel)).replace("/srv/nvme", str(kernel))
    (tmp_path / "bot.toml").write_text(example.replace("/srv/mptcp-nvme", str(tmp_path / "r")))
    loaded = config_mod.load(tmp_path / "bot.toml")
    assert [t.tag for t in loaded.trees] == ["net-next", "nvme-7.4"]
    assert loaded.ours == config_mod.OURS and loaded.delegate == "someone"
    assert loaded.flaky_reason("selftests/test_churn.py::test_connect_cycles[tcp]")


def test_one_broken_series_does_not_hold_up_the_others(world, capsys):
    server, bot, calls, _ = world
    first = server.add_series("linux-nvme", "first", 1, [HARMLESS])
    second = server.add_series("linux-nvme", "second", 1, [HARMLESS])
    real = bot.judge

    def broken(series, out, selection, matrix=None):
        if len(calls) == 0:
            calls.append("broken")
            raise SetupError("mptcp-nvme run exited 1 without results.json")
        return real(series, out, selection)
    bot.judge = broken
    assert bot.poll() == 1
    assert "run failed, left for the next pass" in capsys.readouterr().err
    assert bot.state.series(first["id"])["status"] == "running"
    assert bot.state.series(second["id"])["status"] == "done"
    server.fail_next(f"/api/1.2/series/{first['id']}/", 404)
    bot.poll()
    assert bot.state.series(first["id"])["status"] == "errored"


MATRIX = '''matrix = ["--paths", "4", "--iopolicy", "numa", "--loss", "0"]
'''


@pytest.mark.parametrize("reads, state, description", [
    ({"main": (3.4, 13.2), "baseline": (3.4, 13.1)}, "success",
     "2 pass, 0 skip; no new failures; mptcp 4-path numa 3.9x tcp"),
    ({"main": (3.4, 8.0), "baseline": (3.4, 13.2)}, "warning",
     "matrix regression against the base: mptcp 4 numa 0 -39%; mptcp 4-path numa 2.4x tcp")])
def test_a_tree_with_a_matrix_puts_its_ratio_in_the_check(world, tmp_path, reads, state,
                                                           description):
    """The matrix of a tree that has one runs when nothing new failed: its ratio ends the
    description, a cell slower than the base beyond the repeats' spread is a warning, and
    the page shows the matrix table and chart."""
    server, bot, calls, tree = world
    bot.config = config_mod.load(write_config(tmp_path, server.url, tree, MATRIX))
    bot.judge = recorded_judge(calls, reads)
    harmless = server.add_series("linux-nvme", "a harmless note", 1, [HARMLESS])
    breaking = server.add_series("linux-nvme", "reject tcp", 1, [breaking_patch(tree)])
    assert bot.poll() == 2
    assert [c[2] for c in calls] == [("--paths", "4", "--iopolicy", "numa", "--loss", "0")] * 2
    check = server.checks[harmless["patches"][0]["id"]][-1]
    assert (check["state"], check["description"]) == (state, description)
    folder = bot.config.results_dir / f"series-{harmless['id']}-v1"
    recorded = json.loads((folder / "results.json").read_text())
    assert recorded["matrix"]["headline"] == description.rpartition("; ")[2]
    page = (folder / "index.html").read_text()
    assert 'src="matrix/matrix.png"' in page and "mptcp 4 numa 0" in page
    assert "matrix (base+series against base" in (folder / "summary.md").read_text()
    # the breaking series' new failures stop it before a matrix: no matrix folder
    assert not (bot.config.results_dir / f"series-{breaking['id']}-v1/matrix").exists()
    assert server.checks[breaking["patches"][0]["id"]][-1]["state"] == "fail"


@pytest.mark.parametrize("extra, message", [
    ('matrix = ["--paths", "4", "--repeat", "3"]\n', None),
    ('args = ["--no-such-option"]\n', "trees.nvme-7.4.args (mptcp-nvme run): unrecognized "
                                      "arguments: --no-such-option"),
    ('matrix = ["--trtype", "udp"]\n', "trees.nvme-7.4.matrix (mptcp-nvme matrix): argument "
                                       "--trtype"),
    ('matrix = ["--kernel", "/srv/linux"]\n', "trees.nvme-7.4.matrix: --kernel is the bot's "
                                             "to choose"),
    ('args = ["--results-dir=/tmp/x"]\n', "trees.nvme-7.4.args: --results-dir is the bot's"),
    ('matrix = "--paths 4"\n', "trees.nvme-7.4.matrix must be a list of strings")])
def test_a_trees_options_are_parsed_as_their_command_parses_them(tmp_path, kernel, monkeypatch,
                                                                 extra, message):
    monkeypatch.setenv("PW_BOT_TOKEN", TOKEN)
    path = write_config(tmp_path, "https://patchwork.example.org", kernel, extra)
    if message is None:
        assert config_mod.load(path).trees[0].matrix == ("--paths", "4", "--repeat", "3")
        return
    with pytest.raises(UsageError, match=re.escape(message)):
        config_mod.load(path)
