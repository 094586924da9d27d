"""The browser console (``/``) opened at an address that is not loopback,
through a proxy: the page's origin is that address, which the circles do
not accept unless ``--allowed-origin`` names it.

Job (besides browserkit's keys; ``chromium_args`` sends every request but
loopback ones through the admin endpoint as a proxy): ``url`` (the page at
the foreign address), ``circles`` (how many rows the table shows),
``circle`` (an open circle's id).

The result: the page's origin and what a run showed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402
from admin_console import run_script  # noqa: E402


def work(session, job):
    page = session.page
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    return {
        "origin": session.evaluate("() => location.origin"),
        "run": run_script(session, job["circle"], "40 + 2"),
        "pageerrors": [line for line in session.console if "pageerror" in line],
    }


if __name__ == "__main__":
    browserkit.main(work)
