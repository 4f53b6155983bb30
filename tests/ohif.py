"""The real OHIF viewer in a real browser, for tests, all on loopback.

- ``ohif_dist``: the prebuilt viewer (``dist/`` of the npm package
  ``@ohif/app``) that ``scripts/setup_ohif.sh`` unpacks into
  ``.cache/ohif/VERSION/``, or the folder ``METASTORE_OHIF_DIST`` names.
- ``viewer``: that ``dist/`` served on a free loopback port as a
  single-page app (unknown paths answer ``index.html``), with the
  ``/app-config.js`` a test sets (``viewer.app_config``).
- ``browser``: Debian's chromium (``/usr/bin/chromium``) driven by
  playwright, headless, with one context whose every request to anywhere
  but loopback is aborted, so nothing leaves the machine; ``viewer_page``
  opens a fresh page in it. ``METASTORE_OHIF_SCREENSHOTS=DIR`` keeps a
  screenshot of each check (``snapshot``).
- ``cors_proxy``: forwards ``/dicomweb/...`` to a DICOMweb root with extra
  headers (an archive's credentials) and adds CORS, so the viewer, on its
  own origin, can query an archive that speaks no CORS (Orthanc).

Where chromium, playwright or the viewer is missing the tests skip, except
with ``CI=true``, where they fail. The page readers below wait for what a
person would see: study-list rows, the series of the study browser, and a
viewport canvas holding a drawn (non-black, settled) image.
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

OHIF_VERSION = "3.13.2"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIST = ROOT / ".cache" / "ohif" / OHIF_VERSION / "package" / "dist"
CHROMIUM = "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Every request the page makes to anything but these is aborted.
LOOPBACK = re.compile(r"^(?!(?:https?|wss?)://(?:127\.0\.0\.1|localhost|\[::1\])[:/]|blob:|data:)")
# A study list, a series list and a drawn image each come well within this.
WAIT = 20.0


def _missing(what: str) -> None:
    """Fail in CI, skip elsewhere: the browser tests must run in CI."""
    message = f"{what}; run scripts/setup_ohif.sh"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on a free loopback port; yields the server's base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            # The page went elsewhere: the browser dropped the request.
            with suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)


# ----------------------------------------------------------------- the viewer


@dataclass
class Viewer:
    """The served viewer: its origin and the ``app-config.js`` it answers."""

    dist: Path
    origin: str = ""
    app_config: str = "window.config = {};"
    requests: list[str] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return f"{self.origin}{path}"

    def launch_url(self, launch_file: str) -> str:
        """The route that opens a DICOM JSON launch file (the ``dicomjson`` source)."""
        return self.url(f"/viewer/dicomjson?url={quote(launch_file, safe='')}")


def _content_type(path: Path) -> str:
    if path.suffix == ".wasm":  # the image codecs; compiled streaming only with this type
        return "application/wasm"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


@contextmanager
def serve_viewer(dist: Path) -> Iterator[Viewer]:
    """Serve ``dist`` at the root of a loopback origin, as a single-page app."""
    viewer = Viewer(dist=dist)
    index = dist / "index.html"

    class Handler(_QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urlsplit(self.path).path
            viewer.requests.append(path)
            if path == "/app-config.js":
                body = viewer.app_config.encode()
                headers = {
                    "Content-Type": "text/javascript; charset=utf-8",
                    "Cache-Control": "no-store",
                }
                self.answer(200, body, headers)
                return
            found = (dist / path.lstrip("/")).resolve()
            headers = {"Content-Type": _content_type(found)}
            if not found.is_relative_to(dist) or not found.is_file() or found == index:
                found = index  # a client route: /viewer, /viewer/dicomjson, ...
                headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
            else:
                # Bundles, codecs, fonts: a page load after the first in a
                # context takes them from the browser's cache (~50 MB each load).
                headers["Cache-Control"] = "max-age=3600"
            self.answer(200, found.read_bytes(), headers)

        do_HEAD = do_GET  # noqa: N815

    with _serving(Handler) as origin:
        viewer.origin = origin
        yield viewer


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    """The prebuilt OHIF viewer's ``dist/`` folder."""
    dist = Path(os.environ.get("METASTORE_OHIF_DIST", DEFAULT_DIST)).resolve()
    if not (dist / "index.html").is_file():
        _missing(f"the OHIF viewer {OHIF_VERSION} is not at {dist}")
    return dist


@pytest.fixture(scope="session")
def viewer(ohif_dist: Path) -> Iterator[Viewer]:
    """The viewer on loopback for the session; a test sets its ``app_config``."""
    with serve_viewer(ohif_dist) as served:
        yield served


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by playwright (no browser download)."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class ViewerPage:
    """A page: the URLs it asked for, and those its context refused (not loopback)."""

    page: Any
    refused: list[str]  # the context's record of aborted requests
    since: int  # how many of them were before this page
    requests: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> list[str]:
        """The requests to anything but loopback since this page opened (aborted)."""
        return self.refused[self.since :]


@pytest.fixture(scope="session")
def browser_context(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """One context for the session, so the viewer's ~50 MB of bundles load once.

    Every request to anything but loopback is aborted and recorded.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    blocked: list[str] = []

    def refuse(route: Any) -> None:
        blocked.append(route.request.url)
        route.abort()

    context.route(LOOPBACK, refuse)
    try:
        yield context, blocked
    finally:
        context.close()


@pytest.fixture
def viewer_page(browser_context: tuple[Any, list[str]]) -> Iterator[ViewerPage]:
    """A fresh page (its own session storage) in the session's context."""
    context, blocked = browser_context
    opened = ViewerPage(page=context.new_page(), refused=blocked, since=len(blocked))
    opened.page.on("request", lambda request: opened.requests.append(request.url))
    try:
        yield opened
    finally:
        opened.page.close()


# ------------------------------------------------------------- reading a page


def snapshot(page: Any, name: str) -> None:
    """Save what a person would see as NAME.png in ``METASTORE_OHIF_SCREENSHOTS``, when set."""
    folder = os.environ.get("METASTORE_OHIF_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def wait_for(page: Any, read: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Poll ``read()`` until ``done`` holds for its value; fail naming ``what`` and the page."""
    deadline = time.monotonic() + WAIT
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            text = page.evaluate("() => document.body ? document.body.innerText : ''")
            raise AssertionError(
                f"{what}: still {value!r} after {WAIT:.0f} s; the page shows: {text[:600]!r}"
            )
        time.sleep(0.1)
        value = read()
    return value


_ROWS = """() => Array.from(document.querySelectorAll('table > tbody > tr'))
    .filter(row => !row.querySelector('input'))
    .map(row => row.innerText.replace(/\\s+/g, ' ').trim())"""


def study_rows(page: Any, count: int) -> list[str]:
    """The text of each study-list row, once the list holds ``count`` rows."""
    rows: list[str] = wait_for(
        page, lambda: page.evaluate(_ROWS), lambda rows: len(rows) >= count, "study list rows"
    )
    return rows


_SERIES = """() => {
    const service = window.services && window.services.displaySetService;
    if (!service) { return null; }
    return service.getActiveDisplaySets().map(d => d.SeriesInstanceUID);
}"""


def browser_series(page: Any, expected: set[str]) -> set[str]:
    """The series of the study browser's display sets, once it holds ``expected``.

    Returns what it holds: the caller asserts it is exactly ``expected``.
    """
    found: list[str] | None = wait_for(
        page,
        lambda: page.evaluate(_SERIES),
        lambda series: series is not None and expected <= set(series),
        "series in the study browser",
    )
    assert found is not None
    return set(found)


# Each viewport canvas with an image: its size, the share of pixels that are
# not black, and a checksum that changes when anything on it is redrawn.
_CANVASES = """() => Array.from(document.querySelectorAll('.cornerstone-viewport-element canvas, [data-viewport-uid] canvas'))
    .filter(canvas => canvas.width > 0 && canvas.height > 0)
    .map(canvas => {
        const context = canvas.getContext('2d', {willReadFrequently: true});
        if (!context) { return null; }
        const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let lit = 0, sum = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            const value = pixels[i] + pixels[i + 1] + pixels[i + 2];
            if (value > 24) { lit += 1; }
            sum = (sum * 31 + value) % 1000000007;
        }
        return {width: canvas.width, height: canvas.height, share: lit / (pixels.length / 4), sum};
    })
    .filter(found => found !== null)"""


def drawn_share(page: Any, settle: float = 2.0) -> float:
    """The share of non-black pixels of the viewport canvas, once its image is drawn.

    Drawn means: some canvas is non-black, and nothing on the canvases
    changed for ``settle`` seconds (the viewer draws progressively).
    """
    deadline = time.monotonic() + WAIT
    last: list[dict[str, Any]] = []
    since = time.monotonic()
    while True:
        found: list[dict[str, Any]] = page.evaluate(_CANVASES)
        now = time.monotonic()
        if found != last:
            last, since = found, now
        elif found and max(c["share"] for c in found) > 0 and now - since >= settle:
            return float(max(c["share"] for c in found))
        if now > deadline:
            raise AssertionError(f"no settled non-black viewport canvas after {WAIT:.0f} s: {last}")
        time.sleep(0.25)


# ----------------------------------------------------------- the CORS proxy


@dataclass
class Proxy:
    """The proxy's base URL (its DICOMweb root is ``base + '/dicomweb'``) and what it forwarded."""

    base: str = ""
    forwarded: list[str] = field(default_factory=list)


@contextmanager
def cors_proxy(root: str, headers: Mapping[str, str]) -> Iterator[Proxy]:
    """Forward ``GET /dicomweb/...`` to the DICOMweb ``root`` with ``headers``, adding CORS."""
    proxy = Proxy()
    client = httpx.Client(timeout=httpx.Timeout(30.0), headers=dict(headers))
    cors = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, OPTIONS",
        "Access-Control-Allow-Headers": "Accept, Authorization",
    }

    class Handler(_QuietHandler):
        def do_OPTIONS(self) -> None:  # noqa: N802 (http.server's naming)
            self.answer(204, b"", cors)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if not self.path.startswith("/dicomweb/"):
                self.answer(404, b"not a DICOMweb path", cors)
                return
            proxy.forwarded.append(self.path)
            upstream = client.get(
                root + self.path.removeprefix("/dicomweb"),
                headers={"Accept": self.headers.get("Accept", "*/*")},
            )
            kept = {"Content-Type": upstream.headers.get("Content-Type", "")}
            self.answer(upstream.status_code, upstream.content, {**kept, **cors})

    try:
        with _serving(Handler) as base:
            proxy.base = base
            yield proxy
    finally:
        client.close()
