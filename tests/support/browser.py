"""A real browser for the tests: Debian's chromium, headless, on file:// pages, and what
it shows: the DOM it built (Dom) and a screenshot's pixels (assert_drawn). Without the
binary, opening a page skips the test, or under CI (CI set) fails it: ci/setup installs it."""

import os
import shutil
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mptcp_nvme import proc

WIDTH, HEIGHT = 1280, 2000


class Dom(HTMLParser):
    """What chromium's --dump-dom printed: its tags, text, links, images, the text of each
    element with an id, and each table's rows as (tr class, [cell texts])."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "wbr"}
    BLOCKS = {"article", "br", "details", "div", "figcaption", "figure", "footer", "h1", "h2",
              "h3", "h4", "header", "li", "p", "pre", "section", "summary", "table", "td",
              "th", "tr", "ul"}

    def __init__(self, markup):
        super().__init__()
        self.tags, self.links, self.images, self.by_id, self.tables = [], [], [], {}, {}
        self._open, self._table, self._row, self._all = [], None, None, []
        self.feed(markup)
        self.close()
        self.text = " ".join("".join(self._all).split())

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self._space(tag)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs.get("src"))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or len(self.tables), [])
        if tag == "tr" and self._table is not None:
            self._row = []
            self._table.append((attrs.get("class") or "", self._row))
        if tag not in self.VOID:
            self._open.append((tag, attrs, []))

    def handle_endtag(self, tag):
        self._space(tag)
        while self._open:
            name, attrs, parts = self._open.pop()
            text = " ".join("".join(parts).split())
            if attrs.get("id"):
                self.by_id[attrs["id"]] = text
            if name in ("td", "th") and self._row is not None:
                self._row.append(text)
            if name == "table":
                self._table = None
            if name == tag:
                return

    def _space(self, tag):
        if tag in self.BLOCKS:           # a block's edge separates words, as on screen
            self.handle_data(" ")

    def handle_data(self, data):
        if not any(name in ("style", "title") for name, _, _ in self._open):
            self._all.append(data)
        for _, _, parts in self._open:
            parts.append(data)


class Chromium:
    """chromium --headless on file:// pages, a fresh profile (and HOME) of its own. Without
    the binary, opening a page skips the test, or under CI fails it."""

    MISSING = ("chromium is not installed: the results pages are tested in a real browser "
               "(ci/setup installs it with the host packages)")

    def __init__(self, binary, profile):
        self.binary, self.profile = binary, profile

    def run(self, page, *flags):
        if self.binary is None:
            if os.environ.get("CI", "").lower() not in ("", "0", "false"):
                pytest.fail(f"{self.MISSING}; CI must run these tests", pytrace=False)
            pytest.skip(self.MISSING)
        argv = [self.binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic",
                f"--user-data-dir={self.profile / 'data'}", *flags, Path(page).as_uri()]
        return proc.cmd(argv, timeout=60, env={**os.environ, "HOME": str(self.profile)})

    def dom(self, page):
        return Dom(self.run(page, "--dump-dom").stdout)

    def screenshot(self, page, png):
        self.run(page, f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}")
        return png


def assert_drawn(png, colours):
    """A WIDTH × HEIGHT PNG of many colours, with at least N pixels of each of
    ``colours`` ({"#rrggbb" or (r, g, b): N})."""
    import matplotlib.image
    import numpy
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (WIDTH, HEIGHT)
    pixels = numpy.rint(matplotlib.image.imread(png)[:, :, :3] * 255).astype(int)
    assert len(numpy.unique(pixels[::2, ::2].reshape(-1, 3), axis=0)) > 20
    for colour, least in colours.items():
        rgb = colour if isinstance(colour, tuple) else tuple(
            int(colour[i:i + 2], 16) for i in (1, 3, 5))
        near = numpy.all(numpy.abs(pixels - numpy.array(rgb)) <= 3, axis=-1)
        assert near.sum() >= least, f"{colour}: {near.sum()} pixels, not {least}"


def browser_in(folder):
    """A Chromium on this machine's binary with its profile under ``folder``."""
    return Chromium(shutil.which("chromium"), Path(folder))
