"""The browser console's playground at its edges: an error after characters
outside the Basic Multilingual Plane, a circle picked in the playground that
a reload removes, and a token that a reload revokes.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``admin``
(``http://ADDR``), ``config`` (the path of the circles.json the orchestrator
reads), ``circles`` (how many rows the table shows), ``open`` (the id of an
open circle), ``removed`` (the id of the circle the reload removes),
``guarded`` (the id of a protected circle), ``token`` (a token of
``guarded``), ``unicode`` (a script failing after such characters),
``reloaded`` (the circles.json text that removes ``removed`` and revokes
``token``).

The result holds what the page showed after each step; the Rust test
asserts it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402
from admin_console import reload, result  # noqa: E402


def run(session, circle, script, token=""):
    """Picks `circle` (None: keeps the pick), types and runs `script`."""
    if circle is not None:
        session.page.select_option("#circle", str(circle))
    session.type("#token", token)
    session.type("#script", script)
    session.click("#run")
    shown = result(session)
    shown["selected"] = session.evaluate(
        """() => { const ta = document.getElementById("script");
                   return ta.value.slice(ta.selectionStart, ta.selectionEnd); }"""
    )
    shown["circle"] = session.evaluate(
        """() => { const s = document.getElementById("circle");
                   return s.selectedIndex < 0 ? null : s.options[s.selectedIndex].textContent; }"""
    )
    return shown


def work(session, job):
    page = session.page
    seen = {}
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])

    seen["unicode"] = run(session, job["open"], job["unicode"])
    seen["before"] = run(session, job["guarded"], "caller()", token=job["token"])

    # The removed circle is the one picked when the reload comes.
    page.select_option("#circle", str(job["removed"]))
    seen["reload_code"] = reload(job, job["reloaded"])
    page.wait_for_function(
        "(n) => document.querySelectorAll('#circles tbody tr').length === n",
        arg=job["circles"] - 1,
    )
    seen["removed"] = run(session, None, "40 + 2")
    seen["revoked"] = run(session, job["guarded"], "caller()", token=job["token"])
    seen["pageerrors"] = [line for line in session.console if "pageerror" in line]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
