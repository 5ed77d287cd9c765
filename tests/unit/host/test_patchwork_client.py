"""The patchwork client against the in-process patchwork (tests/support/patchwork_server.py):
lookups, events paged through the Link header as given and ``since`` inclusive, mbox
downloads that ``git am`` takes, checks posted and read back, transient failures retried
and the others one line at once, the token in no message; and the server driven by the
real git-pw client, so its answers are what a patchwork client expects."""

import json
import os
import shutil
import sys
import types
import urllib.parse
from pathlib import Path

import pytest

from mptcp_nvme import proc
from mptcp_nvme.host.patchwork import client as client_mod
from mptcp_nvme.host.patchwork.client import Patchwork, PatchworkError
from tests.support.patchwork_server import PatchworkServer

TOKEN = "0123456789abcdef-s3cret"
GREET = """diff --git a/hello.txt b/hello.txt
--- a/hello.txt
+++ b/hello.txt
@@ -1 +1 @@
-hello
+hello, world
"""
BYE = """diff --git a/hello.txt b/hello.txt
--- a/hello.txt
+++ b/hello.txt
@@ -1 +1,2 @@
 hello, world
+bye
"""
PATCHES = [("hello: greet the world", GREET), ("hello: say bye", BYE)]
COVER = ("hello: a friendlier file", "Two patches to make hello.txt friendlier.\n")
# The keys of the responses recorded in shared/patchwork-samples (API 1.1):
# series-984880.json and patch-14165572.json.
SAMPLE_KEYS = {
    "series": ["id", "url", "web_url", "project", "name", "date", "submitter", "version",
               "total", "received_total", "received_all", "mbox", "cover_letter", "patches"],
    "project": ["id", "url", "name", "link_name", "list_id", "list_email", "web_url",
                "scm_url", "webscm_url"],
    "submitter": ["id", "url", "name", "email"],
    "embedded": ["id", "url", "web_url", "msgid", "date", "name", "mbox"],
    "patch": ["id", "url", "web_url", "project", "msgid", "date", "name", "commit_ref",
              "pull_url", "state", "archived", "hash", "submitter", "delegate", "mbox",
              "series", "comments", "check", "checks", "tags", "headers", "content", "diff",
              "prefixes"],
    "series-embedded": ["id", "url", "web_url", "date", "name", "version", "mbox"],
}


@pytest.fixture
def env(monkeypatch):
    """A patchwork with the project "hello", and a client of it whose sleeps and log
    lines are recorded instead of slept and printed."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")     # a CI proxy must not take local calls
    with PatchworkServer(token=TOKEN) as server:
        project = server.add_project("hello")
        slept, logged = [], []
        client = Patchwork(server.url, token=TOKEN, sleep=slept.append, log=logged.append)
        yield types.SimpleNamespace(server=server, client=client, project=project,
                                    slept=slept, logged=logged)


def one_line_error(err):
    text = str(err)
    assert "\n" not in text and text.startswith("patchwork: "), text
    assert TOKEN not in text
    return text


def git(repo, *args):
    """git in ``repo`` with a configuration of its own (no user's, no system's)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(repo.parent), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "Base", "GIT_AUTHOR_EMAIL": "base@example.com",
           "GIT_COMMITTER_NAME": "CI", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    return proc.cmd(["git", *args], cwd=repo, env=env).stdout


def hello_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "hello.txt").write_text("hello\n")
    git(repo, "add", "hello.txt")
    git(repo, "commit", "-q", "-m", "hello: a file")
    return repo


def assert_applied(repo, mbox):
    git(repo, "am", "-q", str(mbox))
    assert (repo / "hello.txt").read_text() == "hello, world\nbye\n"
    assert git(repo, "log", "--format=%s|%an <%ae>").splitlines() == [
        "hello: say bye|A U Thor <author@example.com>",
        "hello: greet the world|A U Thor <author@example.com>",
        "hello: a file|Base <base@example.com>"]


# Lookups and downloads

def test_project_by_link_name(env):
    project = env.client.project("hello")
    assert (project["id"], project["link_name"]) == (env.project["id"], "hello")
    assert env.server.requests == [("GET", "/api/1.3/projects/hello/")]


def test_a_missing_project_is_one_line_at_once(env):
    with pytest.raises(PatchworkError) as caught:
        env.client.project("nope")
    assert "project 'nope' does not exist" in one_line_error(caught.value)
    assert (caught.value.status, caught.value.transient) == (404, False)
    assert len(env.server.requests) == 1 and env.slept == []


def test_series_patch_cover_and_their_mboxes(env, tmp_path):
    added = env.server.add_series("hello", "hello: a friendlier file", 2, PATCHES, cover=COVER)
    series = env.client.series(added["id"])
    assert (series["name"], series["version"], series["received_all"]) == (
        "hello: a friendlier file", 2, True)
    assert [p["name"] for p in series["patches"]] == [
        "[v2,1/2] hello: greet the world", "[v2,2/2] hello: say bye"]
    patch = env.client.patch(series["patches"][0]["id"])
    assert (patch["diff"], patch["prefixes"]) == (GREET, ["v2", "1/2"])
    assert patch["headers"]["Subject"] == "[PATCH v2 1/2] hello: greet the world"
    cover = env.client.cover(series["cover_letter"]["id"])
    assert (cover["name"], cover["content"]) == ("[v2,0/2] hello: a friendlier file", COVER[1])

    one = env.client.download(patch["mbox"]).decode()
    assert one.startswith("From patchwork ") and f"Message-Id: {patch['msgid']}\n" in one
    assert f"In-Reply-To: {cover['msgid']}\n" in one and one.endswith("---\n" + GREET)
    assert "Subject: [PATCH v2 0/2] hello: a friendlier file\n" in env.client.download(
        cover["mbox"]).decode()
    mbox = tmp_path / "series.mbox"
    mbox.write_bytes(env.client.download(series["mbox"]))
    assert_applied(hello_repo(tmp_path), mbox)


def test_answers_have_the_keys_of_the_recorded_samples(env):
    added = env.server.add_series("hello", "hello: a friendlier file", 2, PATCHES, cover=COVER)
    client = Patchwork(env.server.url, api="1.1")
    series = client.series(added["id"])
    patch = client.patch(added["patches"][0]["id"])
    assert list(series) == SAMPLE_KEYS["series"] and list(patch) == SAMPLE_KEYS["patch"]
    assert list(series["project"]) == list(patch["project"]) == SAMPLE_KEYS["project"]
    assert list(series["submitter"]) == SAMPLE_KEYS["submitter"]
    assert list(series["cover_letter"]) == list(series["patches"][0]) == SAMPLE_KEYS["embedded"]
    assert list(patch["series"][0]) == SAMPLE_KEYS["series-embedded"]
    newer = env.client.patch(added["patches"][0]["id"])
    assert {"list_archive_url", "related"} <= set(newer)


def test_a_patch_found_by_its_message_id(env):
    added = env.server.add_series("hello", "hello: a friendlier file", 2, PATCHES)
    msgid = added["patches"][1]["msgid"]
    query = urllib.parse.urlencode({"project": "hello", "msgid": msgid.strip("<>")})
    found = json.loads(env.client.download(f"/api/1.2/patches/?{query}"))
    assert [patch["id"] for patch in found] == [added["patches"][1]["id"]]


# Events

def series_completed(env, count):
    return [env.server.add_series("hello", f"hello: change {n}", 1, PATCHES[:1])
            for n in range(count)]


def test_events_follow_the_next_link_as_given(env, monkeypatch):
    monkeypatch.setattr(client_mod, "PER_PAGE", 2)
    added = series_completed(env, 5)
    events = env.client.events(env.project["id"])
    assert [event["payload"]["series"]["id"] for event in events] == [s["id"] for s in added]
    assert {event["category"] for event in events} == {"series-completed"}
    pid = env.project["id"]
    # then patchwork's next links: the same filters, sorted, and the page
    assert env.server.requests == [
        ("GET", f"/api/1.3/events/?project={pid}&category=series-completed&order=date&per_page=2"),
        ("GET", "/api/1.3/events/?category=series-completed&order=date&page=2&per_page=2"
                f"&project={pid}"),
        ("GET", "/api/1.3/events/?category=series-completed&order=date&page=3&per_page=2"
                f"&project={pid}")]
    for _, target in env.server.requests:
        keys = [key for key, _ in urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query)]
        assert len(keys) == len(set(keys)), target


def test_events_since_is_inclusive(env):
    series_completed(env, 3)
    every = env.client.events(env.project["id"])
    since = every[1]["date"]
    assert env.client.events(env.project["id"], since=since) == every[1:]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(env.server.requests[-1][1]).query)[
        "since"] == [since]


def test_an_incomplete_series_has_no_event_until_complete(env):
    added = env.server.add_series("hello", "hello: a friendlier file", 2, PATCHES, complete=False)
    assert (added["received_total"], added["total"], added["received_all"]) == (1, 2, False)
    assert env.client.events(env.project["id"]) == []
    env.server.complete(added["id"])
    assert [e["payload"]["series"]["id"] for e in env.client.events(env.project["id"])] == [
        added["id"]]
    assert env.client.series(added["id"])["received_all"] is True


# Checks

def test_post_check_and_read_it_back(env):
    patch_id = env.server.add_series("hello", "hello: x", 1, PATCHES[:1])["patches"][0]["id"]
    posted = env.client.post_check(patch_id, "success", "build", "built", "https://ci.test/1")
    assert {key: posted[key] for key in ("state", "context", "description", "target_url")} == {
        "state": "success", "context": "build", "description": "built",
        "target_url": "https://ci.test/1"}
    env.client.post_check(patch_id, "fail", "test", "2 failed", None)
    assert [c["context"] for c in env.client.checks(patch_id)] == ["build", "test"]
    assert env.client.checks(patch_id, context="test")[0]["state"] == "fail"
    assert env.server.checks[patch_id][0] == posted
    assert env.client.patch(patch_id)["check"] == "fail"
    assert ("POST", f"/api/1.3/patches/{patch_id}/checks/") in env.server.requests


def test_check_context_and_description_are_sanitised(env):
    patch_id = env.server.add_series("hello", "hello: x", 1, PATCHES[:1])["patches"][0]["id"]
    posted = env.client.post_check(patch_id, "warning", "mptcp-nvme/tcp (debug) é",
                                   "unstable:\n  1 flaky test\n", "https://ci.test/2")
    assert (posted["context"], posted["description"]) == (
        "mptcp-nvme_tcp__debug___", "unstable: 1 flaky test")
    long = env.client.post_check(patch_id, "success", "x" * 300, "ok", None)
    assert long["context"] == "x" * 255
    assert env.client.checks(patch_id, context="mptcp-nvme/tcp (debug) é") == [posted]


def test_a_check_state_outside_patchworks_is_refused_before_any_request(env):
    with pytest.raises(ValueError, match="'failed' is not one of pending, success"):
        env.client.post_check(1, "failed", "build", "", None)
    assert env.server.requests == []


def test_posting_needs_the_token(env):
    patch_id = env.server.add_series("hello", "hello: x", 1, PATCHES[:1])["patches"][0]["id"]
    with pytest.raises(PatchworkError, match="needs a token"):
        Patchwork(env.server.url).post_check(patch_id, "success", "build", "", None)
    wrong = Patchwork(env.server.url, token="not-the-" + TOKEN, sleep=env.slept.append)
    with pytest.raises(PatchworkError) as caught:
        wrong.post_check(patch_id, "success", "build", "", None)
    text = one_line_error(caught.value)
    assert text == f"patchwork: POST /api/1.3/patches/{patch_id}/checks/: 403 Invalid token."
    assert "not-the-" not in repr(wrong) and caught.value.transient is False
    assert env.slept == [] and env.server.checks == {}


# Failures

@pytest.mark.parametrize("kind", [502, 503, 504, "timeout"])
def test_transient_failures_are_retried(env, kind):
    series_completed(env, 1)
    client = Patchwork(env.server.url, timeout=1.0 if kind == "timeout" else 30,
                       sleep=env.slept.append, log=env.logged.append)
    env.server.fail_next("/api/1.3/events/", kind)
    assert len(client.events(env.project["id"])) == 1
    assert env.slept == [2.0] and len(env.server.requests) == 2
    reason = "timed out" if kind == "timeout" else f": {kind} "
    assert len(env.logged) == 1 and reason in env.logged[0], env.logged
    assert env.logged[0].startswith("patchwork: GET /api/1.3/events/?project=")
    assert env.logged[0].endswith("; retry 1/4 in 2s")


def test_a_post_is_retried_too(env):
    patch_id = env.server.add_series("hello", "hello: x", 1, PATCHES[:1])["patches"][0]["id"]
    env.server.fail_next(f"/api/1.3/patches/{patch_id}/checks/", 502)
    env.client.post_check(patch_id, "pending", "build", "building", None)
    assert [c["state"] for c in env.server.checks[patch_id]] == ["pending"]
    assert env.slept == [2.0] and all(TOKEN not in line for line in env.logged)


@pytest.mark.parametrize("kind, reason", [
    (401, "401 Invalid token."), (404, "404 Not found."),
    (500, "500 Internal Server Error"), ("garbled", "200 but the body is not JSON")])
def test_other_failures_are_one_line_at_once(env, kind, reason):
    series_id = env.server.add_series("hello", "hello: x", 1, PATCHES[:1])["id"]
    env.server.fail_next("/api/1.3/series/", kind)
    with pytest.raises(PatchworkError) as caught:
        env.client.series(series_id)
    assert one_line_error(caught.value).startswith(
        f"patchwork: GET /api/1.3/series/{series_id}/: {reason}")
    assert caught.value.status == (200 if kind == "garbled" else kind)
    assert caught.value.transient is False
    assert len(env.server.requests) == 1 and env.slept == [] and env.logged == []


def test_retries_run_out(env):
    patch_id = env.server.add_series("hello", "hello: x", 1, PATCHES[:1])["patches"][0]["id"]
    for _ in range(5):
        env.server.fail_next("/api/1.3/patches/", 502)
    with pytest.raises(PatchworkError) as caught:
        env.client.post_check(patch_id, "success", "build", "ok", None)
    assert one_line_error(caught.value) == (
        f"patchwork: POST /api/1.3/patches/{patch_id}/checks/: 502 Bad Gateway "
        "(gave up after 4 retries)")
    assert (caught.value.status, caught.value.transient) == (502, True)
    assert env.slept == [2.0, 4.0, 8.0, 16.0] and len(env.server.requests) == 5
    assert [line.rsplit("; ", 1)[1] for line in env.logged] == [
        "retry 1/4 in 2s", "retry 2/4 in 4s", "retry 3/4 in 8s", "retry 4/4 in 16s"]
    assert all(TOKEN not in line for line in env.logged) and TOKEN not in repr(env.client)
    assert env.server.checks == {}


def test_a_refused_connection_is_transient(env):
    with PatchworkServer() as gone:
        url = gone.url
    client = Patchwork(url, retries=1, sleep=env.slept.append, log=env.logged.append)
    with pytest.raises(PatchworkError) as caught:
        client.series(1)
    assert "Connection refused" in one_line_error(caught.value)
    assert (caught.value.status, caught.value.transient) == (None, True)
    assert env.slept == [2.0]


# The real git-pw client against the server

def git_pw():
    script = Path(sys.executable).with_name("git-pw")
    return script if script.exists() else shutil.which("git-pw")


@pytest.mark.skipif(git_pw() is None, reason="git-pw is not installed (pip install '.[test]')")
def test_git_pw_reads_the_server(env, tmp_path):
    added = env.server.add_series("hello", "hello: a friendlier file", 2, PATCHES, cover=COVER)
    home = tmp_path / "home"
    home.mkdir()
    pw_env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
              "GIT_PAGER": "cat", "PW_SERVER": f"{env.server.url}/api/1.2/",
              "PW_PROJECT": "hello", "PW_TOKEN": TOKEN}

    def run(*args):
        return proc.cmd([git_pw(), *args], env=pw_env, cwd=home, timeout=60).stdout

    listed = run("series", "list", "--format", "csv").splitlines()
    assert listed[0] == '"ID","Date","Name","Version","Submitter"'
    assert listed[1].startswith(f'"{added["id"]}",') and listed[1].endswith(
        '"hello: a friendlier file","2","A U Thor (author@example.com)"')
    mbox = tmp_path / "series.mbox"
    run("series", "download", added["id"], mbox)
    assert mbox.read_text().count("\nSubject: [PATCH v2 ") == 2
    patches = run("patch", "list", "--format", "csv").splitlines()
    assert [row.split(",")[0] for row in patches[1:]] == [
        f'"{p["id"]}"' for p in reversed(added["patches"])]
    shown = run("patch", "show", added["patches"][0]["id"], "--format", "csv")
    assert f'"Message ID","{added["patches"][0]["msgid"]}"' in shown
    assert '"Name","[v2,1/2] hello: greet the world"' in shown
    assert f'"Series","{added["id"]} hello: a friendlier file"' in shown
    assert all(target.startswith(("/api/1.2/", "/series/")) for _, target in env.server.requests)
    assert_applied(hello_repo(tmp_path), mbox)
