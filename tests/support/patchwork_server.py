"""An in-process patchwork for the tests: the REST API subset of shared PATCHWORK.md
(projects, events, series, patches, cover letters, checks, mbox downloads) on 127.0.0.1,
served from a thread, its answers shaped like the responses recorded in
shared/patchwork-samples (the same keys at API version 1.1; later versions add the
fields patchwork added).

    with PatchworkServer(token="t0ken") as pw:
        pw.add_project("mptcp")
        series = pw.add_series("mptcp", "mptcp: a fix", 2, [("mptcp: fix a", DIFF)])
        client = Patchwork(pw.url, token="t0ken")

The socket is bound when the server is built, so a client may connect as soon as the
``with`` is entered. Dates come from a clock that ticks one second per object or event
from 2025-07-22T20:53:58, so a test can name exact ``since`` values. ``fail_next(prefix,
kind)`` makes the next request under a path fail once (an HTTP status, a body that is not
JSON, or an answer that never comes); ``requests`` lists what was asked, ``checks`` what
was posted. Filters outside the subset are ignored, as patchwork ignores unknown ones.
"""

import dataclasses
import datetime
import email.header
import email.utils
import hashlib
import http.server
import itertools
import json
import re
import threading
import time
import traceback
import urllib.parse

VERSIONS = ("1.0", "1.1", "1.2", "1.3")
LATEST = "1.3"
CHECK_STATES = ("pending", "success", "warning", "fail")
WORST_FIRST = ("fail", "warning", "pending", "success")
PATCH_STATES = ("new", "under-review", "accepted", "rejected", "rfc", "not-applicable",
                "changes-requested", "awaiting-upstream", "superseded", "deferred")
FAIL_KINDS = (401, 404, 500, 502, 503, 504, "garbled", "timeout")
PER_PAGE, MAX_PER_PAGE = 30, 250
START = datetime.datetime(2025, 7, 22, 20, 53, 58)
HANG = 30.0                # the longest a "timeout" answer waits for the server to stop
POLL = 0.02                # how often serve_forever looks for shutdown(): the exit's latency
SLUG = re.compile(r"[-a-zA-Z0-9_]+")
SUBMITTER = {"id": 1, "name": "A U Thor", "email": "author@example.com"}
USER = {"id": 1, "username": "ci-bot", "first_name": "CI", "last_name": "Bot",
        "email": "ci@example.com"}
GATEWAY = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}

# The API version that added a field to a representation: older versions leave it out.
ADDED = {
    "project": {"subject_match": "1.1", "list_archive_url": "1.2",
                "list_archive_url_format": "1.2", "commit_url_format": "1.2"},
    "project-embedded": {"list_archive_url": "1.2", "list_archive_url_format": "1.2",
                         "commit_url_format": "1.2"},
    "series": {"web_url": "1.1"},
    "series-embedded": {"web_url": "1.1"},
    "patch": {"web_url": "1.1", "comments": "1.1", "list_archive_url": "1.2", "related": "1.2"},
    "patch-embedded": {"web_url": "1.1", "list_archive_url": "1.2"},
    "cover": {"web_url": "1.1", "mbox": "1.1", "comments": "1.1", "list_archive_url": "1.2"},
    "cover-embedded": {"web_url": "1.1", "mbox": "1.1", "list_archive_url": "1.2"},
    "event": {"actor": "1.2"},
}

API = r"/api(?:/(?P<version>\d+\.\d+))?"
ROUTES = (
    ("GET", API + r"/projects/", "get_projects"),
    ("GET", API + r"/projects/(?P<key>[^/]+)/", "get_project"),
    ("GET", API + r"/events/", "get_events"),
    ("GET", API + r"/series/", "get_series_list"),
    ("GET", API + r"/series/(?P<id>\d+)/", "get_series"),
    ("GET", API + r"/patches/", "get_patches"),
    ("GET", API + r"/patches/(?P<id>\d+)/", "get_patch"),
    ("GET", API + r"/patches/(?P<id>\d+)/checks/", "get_checks"),
    ("POST", API + r"/patches/(?P<id>\d+)/checks/", "post_check"),
    ("GET", API + r"/patches/(?P<id>\d+)/checks/(?P<check>\d+)/", "get_check"),
    ("GET", API + r"/covers/(?P<id>\d+)/", "get_cover"),
    ("GET", r"/series/(?P<id>\d+)/mbox/", "series_mbox"),
    ("GET", r"/patch/(?P<id>\d+)/mbox/", "patch_mbox"),
    ("GET", r"/cover/(?P<id>\d+)/mbox/", "cover_mbox"),
)


def _version(text):
    return tuple(int(part) for part in text.split("."))


def _shape(kind, data, version):
    """``data`` as API ``version`` shows a ``kind``: without the fields added later."""
    added = ADDED.get(kind, {})
    return {key: value for key, value in data.items()
            if _version(added.get(key, "1.0")) <= _version(version)}


def _filename(name, suffix):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + suffix


def _header(value):
    """A mail header value, RFC 2047-encoded when it is not ASCII."""
    return value if value.isascii() else email.header.Header(value, "utf-8").encode()


@dataclasses.dataclass
class Reply:
    """An HTTP answer; None in its place means no answer at all (a timeout)."""

    status: int
    body: bytes
    headers: dict = dataclasses.field(default_factory=dict)


def _json(data, status=200, headers=None):
    return Reply(status, json.dumps(data).encode(),
                 {"Content-Type": "application/json", **(headers or {})})


def _detail(status, detail):
    return _json({"detail": detail}, status)


def _invalid(field, message):
    return _json({field: [message]}, 400)


def _text(body, status=200, content_type="text/plain; charset=utf-8", headers=None):
    return Reply(status, body.encode(), {"Content-Type": content_type, **(headers or {})})


@dataclasses.dataclass
class _Request:
    """One request, parsed: ``pairs`` is its query in order, ``args`` the route's groups."""

    method: str
    path: str
    pairs: list
    headers: object
    body: bytes
    version: str
    args: dict

    def one(self, name):
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name):
        return [value for key, value in self.pairs if key == name and value != ""]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Hands each request to the PatchworkServer and writes its Reply."""

    server_version = "patchwork-test"

    def do_GET(self):
        self._serve()

    def do_POST(self):
        self._serve()

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        patchwork = self.server.patchwork
        try:
            reply = patchwork.handle(self.command, self.path, self.headers, body)
        except Exception:       # a bug of the server: a 500 that says where, not a hang-up
            reply = _text(traceback.format_exc(), 500)
        if reply is None:
            patchwork.stopping.wait(HANG)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        try:
            self.wfile.write(reply.body)
        except ConnectionError:
            pass

    def log_message(self, *args):
        pass


class PatchworkServer:
    """A patchwork instance of projects, series, patches, cover letters and checks, served
    on ``url`` while the ``with`` lasts; ``token`` is the one that may post checks."""

    def __init__(self, token="test-token"):
        self.token = token
        self.requests = []
        self.received = []         # (time.monotonic(), method, target): when each came
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._failures = []
        self._projects, self._series, self._patches, self._covers = {}, {}, {}, {}
        self._checks, self._events = {}, []
        self._ids = {kind: itertools.count(start) for kind, start in
                     (("project", 1), ("series", 100001), ("cover", 200001),
                      ("patch", 300001), ("check", 1), ("event", 1))}
        self._clock = START
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.patchwork = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = None

    def __enter__(self):
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(POLL,),
                                        name="patchwork-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    # What a test sets up

    def add_project(self, link_name, name=None):
        """A project; its representation (``id`` is what the filters take)."""
        with self._lock:
            project = {"id": next(self._ids["project"]), "link_name": link_name,
                       "name": name or link_name, "list_id": f"{link_name}.lists.test",
                       "list_email": f"{link_name}@lists.test"}
            self._projects[project["id"]] = project
            return self._project_json(project, LATEST, embedded=False)

    def add_series(self, project, name, version, patches, cover=None, complete=True, tag=None):
        """A series of ``patches`` [(subject, diff text), ...] with an optional ``cover``
        (subject, body) as mailed to ``project`` (link name or id), with its events. An
        incomplete one (``complete=False``) lacks its last patch until complete(). ``tag``
        is a subject tag ([PATCH net-next v2 1/3])."""
        if not patches:
            raise ValueError("a series has at least one patch")
        with self._lock:
            found = self._project(project)
            if found is None:
                raise KeyError(f"add_series: no project {project!r}")
            series = {"id": next(self._ids["series"]), "project": found["id"],
                      "name": name, "version": version, "date": self._tick(),
                      "total": len(patches), "cover": None, "patches": [], "tag": tag,
                      "pending": list(patches)}
            self._series[series["id"]] = series
            self._event("series-created", series["project"], series=series["id"])
            if cover is not None:
                self._add_cover(series, *cover)
            self._receive(series, len(patches) if complete else len(patches) - 1)
            return self._series_json(series, LATEST)

    def complete(self, series_id):
        """The rest of a series arrives: received_all, and its series-completed event."""
        with self._lock:
            series = self._series[series_id]
            if not series["pending"]:
                raise ValueError(f"series {series_id} is complete already")
            self._receive(series, len(series["pending"]))
            return self._series_json(series, LATEST)

    def fail_next(self, path_prefix, kind):
        """The next request whose path starts with ``path_prefix`` fails once: with HTTP
        ``kind`` (401, 404, 500, 502, 503, 504), a 200 whose body is not JSON ("garbled"),
        or no answer until the server stops ("timeout"). Calls queue up."""
        if kind not in FAIL_KINDS:
            raise ValueError(f"fail_next: {kind!r} is not one of {FAIL_KINDS}")
        with self._lock:
            self._failures.append((path_prefix, kind))

    @property
    def checks(self):
        """The checks posted, by patch id, as the API shows them."""
        with self._lock:
            return {patch_id: [self._check_json(check, LATEST) for check in checks]
                    for patch_id, checks in self._checks.items() if checks}

    # Building the data

    def _tick(self):
        self._clock += datetime.timedelta(seconds=1)
        return self._clock.isoformat()

    def _project(self, key):
        """The project of an id or a link name, or None."""
        for project in self._projects.values():
            if str(key) in (str(project["id"]), project["link_name"]):
                return project
        return None

    def _event(self, category, project_id, **objects):
        self._events.append({"id": next(self._ids["event"]), "category": category,
                             "project": project_id, "date": self._tick(), **objects})

    def _add_cover(self, series, subject, body):
        cover = self._submission("cover", series, 0, subject, body)
        self._covers[cover["id"]] = cover
        series["cover"] = cover["id"]
        self._event("cover-created", series["project"], cover=cover["id"])

    def _receive(self, series, count):
        for _ in range(count):
            subject, diff = series["pending"].pop(0)
            number = len(series["patches"]) + 1
            content = (f"Patch {number} of {series['total']} of {series['name']} "
                       f"v{series['version']}.\n\n"
                       f"Signed-off-by: {SUBMITTER['name']} <{SUBMITTER['email']}>\n")
            patch = self._submission("patch", series, number, subject, content)
            patch["diff"] = diff if diff.endswith("\n") else diff + "\n"
            patch["hash"] = hashlib.sha1(patch["diff"].encode()).hexdigest()
            patch["state"], patch["archived"] = "new", False
            self._patches[patch["id"]] = patch
            series["patches"].append(patch["id"])
            self._event("patch-created", series["project"], patch=patch["id"])
        if not series["pending"]:
            self._event("series-completed", series["project"], series=series["id"])

    def _submission(self, kind, series, number, subject, content):
        """A cover letter (``number`` 0) or a patch as patchwork parsed its mail."""
        numbered = series["total"] > 1 or series["cover"] is not None or number == 0
        prefixes = ([series["tag"]] if series.get("tag") else []) + \
            ([f"v{series['version']}"] if series["version"] > 1 else []) + \
            ([f"{number}/{series['total']}"] if numbered else [])
        date = self._tick()
        ident = next(self._ids[kind])
        msgid = f"<{re.sub(r'[-:T]', '', date)}.{ident}@patchwork.test>"
        first = self._covers.get(series["cover"]) or self._patches.get(
            (series["patches"] or [None])[0])
        project = self._projects[series["project"]]
        headers = {"From": f"{SUBMITTER['name']} <{SUBMITTER['email']}>",
                   "Date": email.utils.format_datetime(
                       datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.UTC)),
                   "Subject": _header(f"[PATCH {' '.join(prefixes)}] {subject}" if prefixes
                                      else f"[PATCH] {subject}"),
                   "Message-Id": msgid,
                   **({"In-Reply-To": first["msgid"]} if first else {}),
                   "To": project["list_email"], "List-Id": f"<{project['list_id']}>"}
        return {"id": ident, "series": series["id"], "project": series["project"],
                "msgid": msgid, "date": date, "number": number, "prefixes": prefixes,
                "name": f"[{','.join(prefixes)}] {subject}" if prefixes else subject,
                "headers": headers, "content": content}

    # Serving

    def handle(self, method, target, headers, body):
        """The Reply to one request, or None for no answer."""
        with self._lock:
            self.requests.append((method, target))
            self.received.append((time.monotonic(), method, target))
            split = urllib.parse.urlsplit(target)
            kind = self._failure(split.path)
            if kind is not None:
                return self._failed(kind)
            return self._route(method, split, headers, body)

    def _failure(self, path):
        for index, (prefix, kind) in enumerate(self._failures):
            if path.startswith(prefix):
                del self._failures[index]
                return kind
        return None

    @staticmethod
    def _failed(kind):
        if kind == "timeout":
            return None
        if kind == "garbled":
            return Reply(200, b'{"id": 1, "name": "[v2,1/2] tru',
                         {"Content-Type": "application/json"})
        if kind in GATEWAY:
            phrase = f"{kind} {GATEWAY[kind]}"
            return _text(f"<html>\r\n<head><title>{phrase}</title></head>\r\n<body>\r\n"
                         f"<center><h1>{phrase}</h1></center>\r\n</body>\r\n</html>\r\n",
                         kind, "text/html")
        if kind == 500:
            return _text("<h1>Server Error (500)</h1>", 500, "text/html")
        if kind == 401:
            return Reply(401, b'{"detail": "Invalid token."}',
                         {"Content-Type": "application/json", "WWW-Authenticate": "Token"})
        return _detail(404, "Not found.")

    def _route(self, method, split, headers, body):
        allowed = False
        for route_method, pattern, name in ROUTES:
            match = re.fullmatch(pattern, split.path)
            if match is None:
                continue
            if route_method != method:
                allowed = True
                continue
            args = match.groupdict()
            version = args.pop("version", None) or LATEST
            if version not in VERSIONS:
                return _detail(404, "Not found.")
            pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
            return getattr(self, name)(_Request(method, split.path, pairs, headers, body,
                                                version, args))
        if allowed:
            return _detail(405, f'Method "{method}" not allowed.')
        return _detail(404, "Not found.")

    def _page(self, request, items):
        """One page of ``items`` with patchwork's Link header, whose URLs keep the query."""
        per_page = min(self._int(request.one("per_page"), PER_PAGE), MAX_PER_PAGE)
        page = self._int(request.one("page"), 1)
        start = (page - 1) * per_page
        if page < 1 or (page > 1 and start >= len(items)):
            return _detail(404, "Invalid page.")
        links = []
        if start + per_page < len(items):
            links.append(f'<{self._page_url(request, page + 1)}>; rel="next"')
        if page > 1:
            links.append(f'<{self._page_url(request, page - 1)}>; rel="prev"')
        return _json(items[start:start + per_page],
                     headers={"Link": ", ".join(links)} if links else {})

    def _page_url(self, request, page):
        """The URL of another page as patchwork (Django REST framework) writes it: the
        request's query with ``page`` replaced (dropped for the first), keys sorted."""
        query = [(key, value) for key, value in request.pairs if key != "page"]
        query += [("page", str(page))] if page > 1 else []
        query.sort(key=lambda pair: pair[0])
        return f"{self.url}{request.path}?{urllib.parse.urlencode(query)}"

    @staticmethod
    def _int(text, default):
        try:
            return int(text) if text is not None else default
        except ValueError:
            return default

    @staticmethod
    def _ordered(request, records, default, fields=("id", "date", "name")):
        order = request.one("order") or default
        if order.lstrip("-") not in fields:
            order = default
        field = order.lstrip("-")
        return sorted(records, key=lambda record: (record[field], record["id"]),
                      reverse=order.startswith("-"))

    def _filtered(self, request, records, search=True):
        """``records`` that pass the project, since (inclusive), before and q filters; a
        Reply when a filter is invalid."""
        projects = set()
        for key in request.all("project"):
            project = self._project(key)
            if project is None:
                return _invalid("project", f"Select a valid choice. {key} is not one of the "
                                           "available choices.")
            projects.add(project["id"])
        bounds = {}
        for name in ("since", "before"):
            try:
                bounds[name] = self._when(request.one(name))
            except ValueError:
                return _invalid(name, "Enter a valid date/time.")
        terms = [term.lower() for term in re.split(r"[\s,]+", request.one("q") or "") if term]
        return [record for record in records
                if (not projects or record["project"] in projects)
                and (bounds["since"] is None or self._when(record["date"]) >= bounds["since"])
                and (bounds["before"] is None or self._when(record["date"]) < bounds["before"])
                and (not search or all(term in record["name"].lower() for term in terms))]

    @staticmethod
    def _when(text):
        if text is None:
            return None
        when = datetime.datetime.fromisoformat(text)
        return when.astimezone(datetime.UTC).replace(tzinfo=None) if when.tzinfo else when

    def _lookup(self, table, request):
        return table.get(int(request.args["id"]))

    # Endpoints

    def get_projects(self, request):
        projects = self._ordered(request, list(self._projects.values()), "id", ("id", "name"))
        return self._page(request, [self._project_json(p, request.version, embedded=False)
                                    for p in projects])

    def get_project(self, request):
        project = self._project(request.args["key"])
        if project is None:
            return _detail(404, "Not found.")
        return _json(self._project_json(project, request.version, embedded=False))

    def get_events(self, request):
        events = self._filtered(request, self._events, search=False)
        if isinstance(events, Reply):
            return events
        categories = request.all("category")
        events = [event for event in events if not categories or event["category"] in categories]
        events = self._ordered(request, events, "-date", fields=("date",))
        return self._page(request, [self._event_json(event, request.version) for event in events])

    def get_series_list(self, request):
        found = self._filtered(request, list(self._series.values()))
        if isinstance(found, Reply):
            return found
        found = self._ordered(request, found, "id")
        return self._page(request, [self._series_json(s, request.version) for s in found])

    def get_series(self, request):
        series = self._lookup(self._series, request)
        if series is None:
            return _detail(404, "Not found.")
        return _json(self._series_json(series, request.version))

    def get_patches(self, request):
        found = self._filtered(request, list(self._patches.values()))
        if isinstance(found, Reply):
            return found
        found = [patch for patch in found if self._patch_matches(request, patch)]
        found = self._ordered(request, found, "id")
        return self._page(request, [self._patch_json(p, request.version, detail=False)
                                    for p in found])

    @staticmethod
    def _patch_matches(request, patch):
        """The state (slugs or ids), archived and msgid (API 1.2 on) filters."""
        states = {PATCH_STATES[int(s) - 1] if s.isdigit() and 0 < int(s) <= len(PATCH_STATES)
                  else s.lower() for s in request.all("state")}
        archived = request.one("archived")
        msgid = request.one("msgid") if _version(request.version) >= (1, 2) else None
        return ((not states or patch["state"] in states)
                and (archived is None or (archived.lower() in ("true", "1")) == patch["archived"])
                and (msgid is None or patch["msgid"] == f"<{msgid.strip('<>')}>"))

    def get_patch(self, request):
        patch = self._lookup(self._patches, request)
        if patch is None:
            return _detail(404, "Not found.")
        return _json(self._patch_json(patch, request.version))

    def get_cover(self, request):
        cover = self._lookup(self._covers, request)
        if cover is None:
            return _detail(404, "Not found.")
        return _json(self._cover_json(cover, request.version))

    def get_checks(self, request):
        if self._lookup(self._patches, request) is None:
            return _detail(404, "Not found.")
        checks = self._checks.get(int(request.args["id"]), [])
        for name in ("context", "state"):
            values = request.all(name)
            checks = [check for check in checks if not values or check[name] in values]
        checks = self._ordered(request, checks, "id", fields=("id", "date"))
        return self._page(request, [self._check_json(check, request.version) for check in checks])

    def get_check(self, request):
        checks = self._checks.get(int(request.args["id"]), [])
        for check in checks:
            if check["id"] == int(request.args["check"]):
                return _json(self._check_json(check, request.version))
        return _detail(404, "Not found.")

    def post_check(self, request):
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return _detail(403, "Authentication credentials were not provided.")
        if authorization != f"Token {self.token}":
            return _detail(403, "Invalid token.")
        patch = self._lookup(self._patches, request)
        if patch is None:
            return _detail(404, "Not found.")
        fields = self._form(request)
        if isinstance(fields, Reply):
            return fields
        problem = self._check_problem(fields)
        if problem is not None:
            return problem
        check = {"id": next(self._ids["check"]), "patch": patch["id"], "date": self._tick(),
                 "state": fields["state"], "context": fields.get("context") or "default",
                 "target_url": fields.get("target_url") or None,
                 "description": fields.get("description") or None}
        self._checks.setdefault(patch["id"], []).append(check)
        self._event("check-created", patch["project"], patch=patch["id"], check=check["id"])
        return _json(self._check_json(check, request.version), 201)

    @staticmethod
    def _form(request):
        if "json" in (request.headers.get("Content-Type") or ""):
            try:
                fields = json.loads(request.body or b"{}")
            except ValueError as err:
                return _detail(400, f"JSON parse error - {err}")
            return fields if isinstance(fields, dict) else _detail(400, "Invalid data.")
        return dict(urllib.parse.parse_qsl(request.body.decode(errors="replace")))

    @staticmethod
    def _check_problem(fields):
        state, context = fields.get("state"), fields.get("context")
        target = fields.get("target_url")
        if not state:
            return _invalid("state", "A check must have a state.")
        if state not in CHECK_STATES:
            return _invalid("state", f'"{state}" is not a valid choice.')
        if context is not None and not SLUG.fullmatch(str(context)):
            return _invalid("context", "Enter a valid “slug” consisting of letters, numbers, "
                                       "underscores or hyphens.")
        if context is not None and len(context) > 255:
            return _invalid("context", "Ensure this field has no more than 255 characters.")
        if target and not re.match(r"https?://[^\s/]+", str(target)):
            return _invalid("target_url", "Enter a valid URL.")
        return None

    def series_mbox(self, request):
        series = self._lookup(self._series, request)
        if series is None:
            return _text("Not Found", 404)
        mails = [self._mail(self._patches[patch_id]) for patch_id in series["patches"]]
        return self._mbox("\n".join(mails), _filename(series["name"], ".patch"))

    def patch_mbox(self, request):
        patch = self._lookup(self._patches, request)
        if patch is None:
            return _text("Not Found", 404)
        return self._mbox(self._mail(patch), _filename(patch["name"], ".patch"))

    def cover_mbox(self, request):
        cover = self._lookup(self._covers, request)
        if cover is None:
            return _text("Not Found", 404)
        return self._mbox(self._mail(cover), _filename(cover["name"], ".mbox"))

    @staticmethod
    def _mbox(text, filename):
        return _text(text, headers={"Content-Disposition": f"attachment; filename={filename}"})

    def _mail(self, submission):
        """A patch or cover letter as one mbox message (what ``git am`` takes)."""
        when = datetime.datetime.fromisoformat(submission["date"])
        headers = {**submission["headers"], "X-Patchwork-Id": str(submission["id"]),
                   "MIME-Version": "1.0", "Content-Type": 'text/plain; charset="utf-8"',
                   "Content-Transfer-Encoding": "8bit"}
        body = submission["content"]
        if "diff" in submission:
            body += "---\n" + submission["diff"]
        return "".join([f"From patchwork {when.ctime()}\n",
                        *(f"{name}: {value}\n" for name, value in headers.items()),
                        "\n", body])

    # Representations, as patchwork's serializers build them for an API version

    def _api(self, version):
        return f"{self.url}/api/{version}"

    def _person_json(self, version):
        return {"id": SUBMITTER["id"], "url": f"{self._api(version)}/people/{SUBMITTER['id']}/",
                "name": SUBMITTER["name"], "email": SUBMITTER["email"]}

    def _user_json(self, version):
        return {"id": USER["id"], "url": f"{self._api(version)}/users/{USER['id']}/",
                **{key: USER[key] for key in ("username", "first_name", "last_name", "email")}}

    def _project_json(self, project, version, embedded=True):
        data = {"id": project["id"], "url": f"{self._api(version)}/projects/{project['id']}/",
                **{key: project[key] for key in ("name", "link_name", "list_id", "list_email")},
                "web_url": "", "scm_url": "", "webscm_url": ""}
        if not embedded:
            data.update(maintainers=[], subject_match="")
        data.update(list_archive_url="", list_archive_url_format="", commit_url_format="")
        return _shape("project-embedded" if embedded else "project", data, version)

    def _web(self, kind, submission):
        link = self._projects[submission["project"]]["link_name"]
        return f"{self.url}/project/{link}/{kind}/{submission['msgid'].strip('<>')}/"

    def _series_embedded(self, series, version):
        link = self._projects[series["project"]]["link_name"]
        return _shape("series-embedded", {
            "id": series["id"], "url": f"{self._api(version)}/series/{series['id']}/",
            "web_url": f"{self.url}/project/{link}/list/?series={series['id']}",
            "date": series["date"], "name": series["name"], "version": series["version"],
            "mbox": f"{self.url}/series/{series['id']}/mbox/"}, version)

    def _series_json(self, series, version):
        link = self._projects[series["project"]]["link_name"]
        cover = self._covers.get(series["cover"])
        received = len(series["patches"])
        return _shape("series", {
            "id": series["id"], "url": f"{self._api(version)}/series/{series['id']}/",
            "web_url": f"{self.url}/project/{link}/list/?series={series['id']}",
            "project": self._project_json(self._projects[series["project"]], version),
            "name": series["name"], "date": series["date"],
            "submitter": self._person_json(version), "version": series["version"],
            "total": series["total"], "received_total": received,
            "received_all": received >= series["total"],
            "mbox": f"{self.url}/series/{series['id']}/mbox/",
            "cover_letter": self._cover_embedded(cover, version) if cover else None,
            "patches": [self._patch_embedded(self._patches[patch_id], version)
                        for patch_id in series["patches"]]}, version)

    def _cover_embedded(self, cover, version):
        return _shape("cover-embedded", {
            "id": cover["id"], "url": f"{self._api(version)}/covers/{cover['id']}/",
            "web_url": self._web("cover", cover), "msgid": cover["msgid"],
            "list_archive_url": None, "date": cover["date"], "name": cover["name"],
            "mbox": f"{self.url}/cover/{cover['id']}/mbox/"}, version)

    def _cover_json(self, cover, version):
        return _shape("cover", {
            "id": cover["id"], "url": f"{self._api(version)}/covers/{cover['id']}/",
            "web_url": self._web("cover", cover),
            "project": self._project_json(self._projects[cover["project"]], version),
            "msgid": cover["msgid"], "list_archive_url": None, "date": cover["date"],
            "name": cover["name"], "submitter": self._person_json(version),
            "mbox": f"{self.url}/cover/{cover['id']}/mbox/",
            "series": [self._series_embedded(self._series[cover["series"]], version)],
            "comments": f"{self.url}/api/covers/{cover['id']}/comments/",
            "headers": cover["headers"], "content": cover["content"]}, version)

    def _patch_embedded(self, patch, version):
        return _shape("patch-embedded", {
            "id": patch["id"], "url": f"{self._api(version)}/patches/{patch['id']}/",
            "web_url": self._web("patch", patch), "msgid": patch["msgid"],
            "list_archive_url": None, "date": patch["date"], "name": patch["name"],
            "mbox": f"{self.url}/patch/{patch['id']}/mbox/"}, version)

    def _patch_json(self, patch, version, detail=True):
        data = {"id": patch["id"], "url": f"{self._api(version)}/patches/{patch['id']}/",
                "web_url": self._web("patch", patch),
                "project": self._project_json(self._projects[patch["project"]], version),
                "msgid": patch["msgid"], "list_archive_url": None, "date": patch["date"],
                "name": patch["name"], "commit_ref": None, "pull_url": None,
                "state": patch["state"], "archived": patch["archived"], "hash": patch["hash"],
                "submitter": self._person_json(version),
                "delegate": None, "mbox": f"{self.url}/patch/{patch['id']}/mbox/",
                "series": [self._series_embedded(self._series[patch["series"]], version)],
                "comments": f"{self.url}/api/patches/{patch['id']}/comments/",
                "check": self._combined(patch["id"]),
                "checks": f"{self.url}/api/patches/{patch['id']}/checks/",
                "tags": {}, "related": []}
        if detail:
            data.update(headers=patch["headers"], content=patch["content"], diff=patch["diff"],
                        prefixes=patch["prefixes"])
        return _shape("patch", data, version)

    def _combined(self, patch_id):
        """The patch's check state: the worst of the newest check of each context."""
        newest = {check["context"]: check["state"] for check in self._checks.get(patch_id, [])}
        return next((state for state in WORST_FIRST if state in newest.values()), "pending")

    def _check_json(self, check, version):
        return {"id": check["id"],
                "url": f"{self._api(version)}/patches/{check['patch']}/checks/{check['id']}/",
                "user": self._user_json(version), "date": check["date"], "state": check["state"],
                "target_url": check["target_url"], "context": check["context"],
                "description": check["description"]}

    def _event_json(self, event, version):
        payload = {}
        if "series" in event:
            payload["series"] = self._series_embedded(self._series[event["series"]], version)
        if "cover" in event:
            payload["cover"] = self._cover_embedded(self._covers[event["cover"]], version)
        if "patch" in event:
            payload["patch"] = self._patch_embedded(self._patches[event["patch"]], version)
        if "check" in event:
            check = next(c for c in self._checks[event["patch"]] if c["id"] == event["check"])
            shown = self._check_json(check, version)
            payload["check"] = {key: shown[key] for key in
                                ("id", "url", "date", "state", "target_url", "context")}
        data = {"id": event["id"], "category": event["category"],
                "project": self._project_json(self._projects[event["project"]], version),
                "date": event["date"], "actor": None, "payload": payload}
        return _shape("event", data, version)
