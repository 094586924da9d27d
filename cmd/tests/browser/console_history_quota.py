"""The console's run history when runs return large outputs: the newest run
must still be remembered once the browser's storage would be full of the
older ones' whole outputs.

Job (besides browserkit's keys): ``url`` (the admin endpoint, ``http://ADDR/``),
``circle`` (the id of an open circle), ``big`` (a script with a large
output), ``runs`` (how many times it is run), ``last_big`` (another
large one, run after them), ``small`` (a last, small script), ``circles`` (how many rows the table must show).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402


def run(session, circle, script):
    page = session.page
    page.select_option("#circle", str(circle))
    page.fill("#script", script)
    # The state of the run before this one is cleared by the click.
    page.evaluate("() => { document.getElementById('run-state').textContent = ''; }")
    session.click("#run")
    session.wait_text("#run-state", "(t) => ['done', 'error', 'failed'].includes(t)")
    return session.text("#run-state")


def work(session, job):
    page = session.page
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    states = [run(session, job["circle"], job["big"]) for _ in range(job["runs"])]
    states.append(run(session, job["circle"], job["last_big"]))
    states.append(run(session, job["circle"], job["small"]))
    return {
        "states": states,
        "history_len": session.evaluate(
            "() => document.querySelectorAll('#history li').length"
        ),
        "history": session.evaluate(
            "() => [...document.querySelectorAll('#history li button')].map((b) => b.textContent)"
        ),
        "stored_chars": session.evaluate(
            "() => (localStorage.getItem('circles.console.history') || '').length"
        ),
    }


if __name__ == "__main__":
    browserkit.main(work)
