"""Drives Debian's headless Chromium through Playwright for the end-to-end tests.

A browser script (a file beside this one) defines ``work(session, job)`` and
ends with ``browserkit.main(work)``. The Rust side (``cmd/tests/common/browser.rs``)
runs it with the Playwright venv's python, writes the job as JSON on stdin and
reads the JSON that ``work`` returns from the last line of stdout. Anything
that goes wrong (no Chromium, no Playwright, a timeout, an exception) exits 1
with one clear line on stderr; nothing is ever skipped.

The job's keys that this module reads:

- ``chromium_args``: extra Chromium command-line switches, for example
  ``--ignore-certificate-errors-spki-list=<base64 SHA-256 of the SPKI>`` to
  trust a test certificate for ``wss://``.
- ``timeout_s``: the whole script's deadline (default 30 s); each page action
  waits at most ``action_timeout_s`` (default 10 s).
- ``block_site_data``: when true, the browser's profile blocks every site's
  data, as a user's "don't allow sites to save data" setting does: reading
  ``localStorage`` or ``sessionStorage`` throws a ``SecurityError``.
- ``pages``: ``{path: html}`` served by a loopback HTTP server (:class:`Site`),
  so a page has a loopback origin, which circles accept (a ``data:`` or
  ``about:blank`` page has the origin ``null``, which they refuse).

Chromium is ``$CIRCLES_CHROMIUM`` or ``/usr/bin/chromium`` (Debian's package);
Playwright never downloads a browser of its own here.
"""

import http.server
import json
import os
import shutil
import signal
import sys
import tempfile
import threading

CHROMIUM_ENV = "CIRCLES_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "run scripts/install-deps.sh (make test runs it first)"


def fail(message):
    """Ends the script with exit code 1 and `message` on stderr."""
    print(f"browserkit: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def chromium_path():
    """The Chromium binary to drive; fails when it is not there."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if not os.access(path, os.X_OK):
        fail(f"no Chromium at {path} (set {CHROMIUM_ENV} or {INSTALL_HINT})")
    return path


class Site:
    """A loopback HTTP server on a free port serving fixed pages.

    ``Site({"/": "<html>…"})``; use as a context manager. ``origin`` is
    ``http://127.0.0.1:<port>``, ``url(path)`` a page's address.
    """

    def __init__(self, pages):
        pages = {path: html.encode("utf-8") for path, html in pages.items()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path="/"):
        return self.origin + path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class Session:
    """One headless Chromium with one page, every wait bounded.

    ``page`` is the Playwright page itself for anything the helpers below do
    not cover.
    """

    def __init__(self, playwright, chromium_args, action_timeout_s, block_site_data=False):
        args = ["--no-sandbox", "--disable-dev-shm-usage", *chromium_args]
        self.profile = None
        try:
            if block_site_data:
                # A profile of its own whose preferences block site data
                # (cookies and storage alike).
                self.profile = tempfile.mkdtemp(prefix="browserkit-profile-")
                os.makedirs(os.path.join(self.profile, "Default"))
                with open(os.path.join(self.profile, "Default", "Preferences"), "w") as f:
                    json.dump({"profile": {"default_content_setting_values": {"cookies": 2}}}, f)
                # A persistent context: ``browser.new_page()`` works as on a browser.
                self.browser = playwright.chromium.launch_persistent_context(
                    self.profile, executable_path=chromium_path(), args=args, headless=True
                )
            else:
                self.browser = playwright.chromium.launch(
                    executable_path=chromium_path(), args=args, headless=True
                )
        except Exception as e:  # Playwright reports launch failures as Error
            fail(f"cannot launch {chromium_path()} with {args}: {e}")
        self.page = self.browser.new_page()
        self.site = None  # the Site of main()
        self.page.set_default_timeout(action_timeout_s * 1000)
        self.console = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def open(self, url):
        """Loads `url` and waits for its load event."""
        self.page.goto(url, wait_until="load")

    def evaluate(self, js, arg=None):
        """Runs `js` (an expression or a function of `arg`; a promise is awaited)."""
        return self.page.evaluate(js, arg)

    def type(self, selector, text):
        """Replaces the text of the input or textarea at `selector`."""
        self.page.fill(selector, text)

    def click(self, selector):
        self.page.click(selector)

    def text(self, selector):
        """The text content of the element at `selector`."""
        return self.page.text_content(selector)

    def wait_text(self, selector, predicate_js):
        """Waits until `predicate_js` (a JS function of the element's text) is true;
        returns the text."""
        handle = self.page.wait_for_function(
            f"(sel) => {{ const el = document.querySelector(sel); "
            f"return el !== null && ({predicate_js})(el.textContent); }}",
            arg=selector,
        )
        handle.dispose()
        return self.text(selector)

    def screenshot(self, path):
        """A PNG of the whole page at `path`."""
        self.page.screenshot(path=path, full_page=True)

    def close(self):
        self.browser.close()
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)


def console_live(page, rows):
    """Waits until the admin console's table shows `rows` rows and its
    event stream says it is live."""
    page.wait_for_function(
        "(n) => document.querySelectorAll('#circles tbody tr').length === n "
        "&& document.getElementById('stream').textContent === 'live'",
        arg=rows,
    )


def main(work, pages=None):
    """Reads the job from stdin, runs ``work(session, job)`` in a fresh browser
    under the job's deadline and prints its result as one JSON line.

    `pages` (the script's own) and the job's ``pages`` are served by one
    :class:`Site`, ``session.site``."""
    try:
        job = json.load(sys.stdin)
    except ValueError as e:
        fail(f"the job on stdin is not JSON: {e}")
    timeout_s = int(job.get("timeout_s", 30))
    # A hang anywhere (Chromium, Playwright's driver, a page) ends the script.
    signal.signal(signal.SIGALRM, lambda *_: fail(f"no result within {timeout_s} s"))
    signal.alarm(timeout_s)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        fail(f"Playwright for Python is missing in {sys.executable} ({e}); {INSTALL_HINT}")
    session = None
    try:
        with Site({**(pages or {}), **job.get("pages", {})}) as site, sync_playwright() as pw:
            session = Session(
                pw,
                job.get("chromium_args", []),
                float(job.get("action_timeout_s", 10)),
                bool(job.get("block_site_data", False)),
            )
            session.site = site
            try:
                result = work(session, job)
            finally:
                session.close()
    except Exception as e:
        console = "\n".join(session.console) if session else ""
        fail(f"{type(e).__name__}: {e}\npage console:\n{console}")
    signal.alarm(0)
    print(json.dumps(result), flush=True)
