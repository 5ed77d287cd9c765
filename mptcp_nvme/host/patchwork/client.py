"""A client of patchwork's REST API: the subset a CI bot needs (events, series, patches,
cover letters, mbox downloads, checks), standard library only.

Every request goes through ``Patchwork._request``. Transient failures (502, 503, 504,
timeouts, refused or dropped connections) are tried again ``retries`` times with an
exponential backoff slept through the injected ``sleep``; POSTs too, as the newest check of
a context is the one that counts, so posting it twice does no harm. Anything else (4xx,
500, a body that is not JSON) raises PatchworkError at once with one line: method, path,
status and a short reason. The token goes only into the Authorization header of POSTs:
no message, log line or repr shows it.
"""

import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from mptcp_nvme.errors import SetupError

STATES = ("pending", "success", "warning", "fail")
TRANSIENT = frozenset({502, 503, 504})
PER_PAGE = 250                      # patchwork's largest page
CONTEXT_MAX = 255
REASON_MAX = 120
USER_AGENT = "mptcp-nvme-patchwork"
_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


class PatchworkError(SetupError):
    """A request that failed: ``status`` is its HTTP status (None when there was no answer),
    ``transient`` whether the same request may succeed later (502/503/504, timeouts,
    connection errors)."""

    def __init__(self, message, status=None, transient=False):
        super().__init__(message)
        self.status, self.transient = status, transient


def context_slug(context):
    """``context`` as patchwork takes it: letters, digits, ``-`` and ``_`` (anything else
    becomes ``_``), at most 255 characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(context))[:CONTEXT_MAX]


def one_line(text, limit=None):
    """``text`` on one line (runs of whitespace, newlines included, become one space),
    cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."


def next_link(header):
    """The URL of a ``Link`` header's ``rel="next"``, or None."""
    match = _NEXT.search(header or "")
    return match.group(1) if match else None


def _path(url):
    """What a message shows of ``url``: its path and query."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _reason(raw, fallback):
    """A short reason from an error body: patchwork's JSON ``detail`` or field errors,
    else the HTTP reason phrase (error pages in HTML say nothing more)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return one_line(fallback, REASON_MAX)
    if isinstance(body, dict) and "detail" in body:
        return one_line(body["detail"], REASON_MAX)
    if isinstance(body, dict):
        fields = (f"{key}: {' '.join(map(str, v if isinstance(v, list) else [v]))}"
                  for key, v in body.items())
        return one_line("; ".join(fields), REASON_MAX)
    return one_line(body, REASON_MAX)


class Patchwork:
    """One patchwork instance: ``url`` is its root (``https://patchwork.kernel.org``), ``api``
    the REST API version in the paths; ``token`` is needed to post checks only. ``log``
    takes one line per retry."""

    BACKOFF = 2.0                   # seconds before the first retry, doubled for each next

    def __init__(self, url, api="1.3", token=None, timeout=30, retries=4, sleep=time.sleep,
                 log=None):
        self.url = url.rstrip("/")
        self.api = api
        self.base = f"{self.url}/api/{api}"
        self._token = token
        self.timeout, self.retries, self.sleep = timeout, retries, sleep
        self.log = log or (lambda line: None)
        self._opener = urllib.request.build_opener()

    def __repr__(self):
        return f"Patchwork({self.url!r}, api={self.api!r}, token={'set' if self._token else None})"

    # The API

    def project(self, link_name):
        """The project called ``link_name`` (its ``id`` is what events() filters on)."""
        try:
            return self._json("GET", self._api(f"projects/{urllib.parse.quote(link_name)}/"))
        except PatchworkError as err:
            if err.status != 404:
                raise
            raise self._error(f"patchwork: project {link_name!r} does not exist on {self.url}",
                              404) from None

    def events(self, project_id, since=None, category="series-completed"):
        """The project's events of ``category`` from ``since`` (inclusive: a cursor steps past
        the last date it saw), oldest first, every page."""
        query = {"project": project_id, "category": category, "order": "date",
                 "per_page": PER_PAGE}
        if since is not None:
            query["since"] = since.isoformat() if hasattr(since, "isoformat") else since
        events = self._pages(self._api("events/", query))
        return sorted(events, key=lambda event: event.get("date") or "")

    def series(self, series_id):
        """A series: name, version, received_all, mbox, cover_letter, patches, ..."""
        return self._json("GET", self._api(f"series/{int(series_id)}/"))

    def patch(self, patch_id):
        """A patch with its headers, content and diff."""
        return self._json("GET", self._api(f"patches/{int(patch_id)}/"))

    def cover(self, cover_id):
        """A cover letter."""
        return self._json("GET", self._api(f"covers/{int(cover_id)}/"))

    def download(self, url):
        """The bytes at ``url``: an mbox link (those are outside /api/), absolute or a path
        on this instance."""
        if "://" not in url:
            url = f"{self.url}/{url.lstrip('/')}"
        return self._request("GET", url, accept="*/*")[2]

    def checks(self, patch_id, context=None):
        """The checks of a patch, oldest first; only ``context``'s when given (sanitised as
        post_check() does)."""
        query = {"per_page": PER_PAGE}
        if context is not None:
            query["context"] = context_slug(context)
        return self._pages(self._api(f"patches/{int(patch_id)}/checks/", query))

    def post_check(self, patch_id, state, context, description, target_url):
        """Post a check on a patch (a series has none: post it on each of its patches);
        the check patchwork created."""
        if state not in STATES:
            raise ValueError(f"check state {state!r} is not one of {', '.join(STATES)}")
        check = {"state": state, "context": context_slug(context),
                 "description": one_line(description)}
        if target_url:
            check["target_url"] = target_url
        return self._json("POST", self._api(f"patches/{int(patch_id)}/checks/"), check, 201)

    # Requests

    def _api(self, path, query=None):
        return f"{self.base}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def _json(self, method, url, body=None, expect=200):
        status, _, raw = self._request(method, url, body, expect)
        return self._decode(method, url, status, raw)

    def _pages(self, url):
        """Every item of a list, following each page's ``Link: <...>; rel="next"`` exactly
        as given: it carries the filters already."""
        items, seen = [], set()
        while url:
            seen.add(url)
            status, headers, raw = self._request("GET", url)
            page = self._decode("GET", url, status, raw)
            if not isinstance(page, list):
                raise self._error(f"patchwork: GET {_path(url)}: {status} but not a list")
            items.extend(page)
            url = next_link(headers.get("Link"))
            if url in seen:
                raise self._error(f"patchwork: GET {_path(url)}: the next page is one already read")
        return items

    def _decode(self, method, url, status, raw):
        try:
            return json.loads(raw)
        except ValueError:
            snippet = one_line(raw[:40].decode(errors="replace"))
            raise self._error(f"patchwork: {method} {_path(url)}: {status} but the body is not "
                              f"JSON ({snippet!r}...)", status) from None

    def _request(self, method, url, body=None, expect=200, accept="application/json"):
        """(status, headers, body) of ``url``, transient failures retried."""
        for attempt in range(self.retries + 1):
            try:
                return self._once(method, url, body, expect, accept)
            except PatchworkError as err:
                if not err.transient:
                    raise
                if attempt == self.retries:
                    tries = f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}"
                    raise self._error(f"{err} (gave up after {tries})", err.status, True) from None
                delay = self.BACKOFF * 2 ** attempt
                self.log(f"{err}; retry {attempt + 1}/{self.retries} in {delay:g}s")
                self.sleep(delay)

    def _once(self, method, url, body, expect, accept):
        where = f"{method} {_path(url)}"
        request = urllib.request.Request(url, method=method,
                                         headers=self._headers(where, method, accept))
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, data=data, timeout=self.timeout) as response:
                status, headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(where, err) from None
        except (OSError, http.client.HTTPException) as err:
            why = getattr(err, "reason", None) or err
            raise self._error(f"patchwork: {where}: {one_line(why) or type(why).__name__}",
                              None, True) from None
        if status != expect:
            raise self._error(f"patchwork: {where}: {status}, expected {expect}", status)
        return status, headers, raw

    def _headers(self, where, method, accept):
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if method != "GET":
            if not self._token:
                raise PatchworkError(f"patchwork: {where}: needs a token, none was given")
            headers["Authorization"] = f"Token {self._token}"
        return headers

    def _http_error(self, where, err):
        try:
            raw = err.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        reason = _reason(raw, err.reason)
        return self._error(f"patchwork: {where}: {err.code} {reason}", err.code,
                           err.code in TRANSIENT)

    def _error(self, message, status=None, transient=False):
        """PatchworkError with the token, should a server have echoed it, masked."""
        if self._token:
            token = re.escape(self._token)
            message = re.sub(rf"(?<![A-Za-z0-9]){token}(?![A-Za-z0-9])", "<token>", message)
        return PatchworkError(message, status, transient)
