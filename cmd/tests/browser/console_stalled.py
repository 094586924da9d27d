"""The browser console (``/``) when its event stream stalls.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``pid`` (the
orchestrator's), ``circles`` (how many rows the table shows).

The table fills; the orchestrator is stopped (SIGSTOP: its connections stay
open, nothing more comes) for 6 s, during which events should have come
every second; what the page's stream indicator says then is the result.
The orchestrator is continued (SIGCONT) whatever happens.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402


def work(session, job):
    page = session.page
    seen = {}
    session.open(job["url"])
    page.wait_for_function(
        "(n) => document.querySelectorAll('#circles tbody tr').length === n "
        "&& document.getElementById('stream').textContent === 'live'",
        arg=job["circles"],
    )
    seen["before"] = session.text("#stream")
    os.kill(job["pid"], signal.SIGSTOP)
    try:
        page.wait_for_timeout(6000)
        seen["stalled"] = session.text("#stream")
    finally:
        os.kill(job["pid"], signal.SIGCONT)
    # Back: the page is live again.
    page.wait_for_function(
        "() => document.getElementById('stream').textContent === 'live'", timeout=15000
    )
    seen["after"] = session.text("#stream")
    return seen


if __name__ == "__main__":
    browserkit.main(work)
