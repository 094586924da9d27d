"""The browser console's playground with a run longer than a minute, on an
orchestrator whose ``--task-timeout`` waits longer than that, then a run
cancelled with the Cancel button.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``circles``
(how many rows the table shows), ``circle`` (an open circle's id),
``long`` (a script running longer than a minute), ``endless`` (a script
running until its ``--script-timeout``), ``wait_s`` (how long the long run
may take to answer).

The result: what the page showed for the long run, for the cancelled one,
and for a short run after it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402
from admin_console import result, run_script  # noqa: E402

OVER = "(t) => ['done', 'error', 'failed', 'cancelled'].includes(t)"


def work(session, job):
    page = session.page
    seen = {}
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])

    page.select_option("#circle", str(job["circle"]))
    session.type("#script", job["long"])
    session.click("#run")
    handle = page.wait_for_function(
        f"() => ({OVER})(document.getElementById('run-state').textContent)",
        timeout=job["wait_s"] * 1000,
    )
    handle.dispose()
    seen["long"] = result(session)

    session.type("#script", job["endless"])
    session.click("#run")
    session.wait_text("#run-state", "(t) => t.startsWith('running')")
    page.wait_for_timeout(500)
    seen["cancel_while_running"] = session.evaluate(
        "() => { const c = document.getElementById('cancel'); return !!c && !c.classList.contains('hidden'); }"
    )
    if not seen["cancel_while_running"]:
        return seen
    session.click("#cancel")
    session.wait_text("#run-state", OVER)
    seen["cancelled"] = session.evaluate(
        """() => ({state: document.getElementById("run-state").textContent,
                  error: document.getElementById("error").textContent,
                  cancel_shown: !document.getElementById("cancel").classList.contains("hidden")})"""
    )
    seen["after"] = run_script(session, job["circle"], "40 + 2")
    seen["pageerrors"] = [line for line in session.console if "pageerror" in line]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
