"""The browser console (``/``) when its event stream stalls.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``pid`` (the
orchestrator's), ``circles`` (how many rows the table shows).

The table fills; the orchestrator is stopped (SIGSTOP: its connections stay
open, nothing more comes) until the page's stream indicator leaves "live",
or for 10 s (events should have come every second); what it says then,
the header's phase and the note on the table's age are the result.
The orchestrator is continued (SIGCONT) whatever happens.
"""

import os
import signal
import sys

from playwright.sync_api import TimeoutError as PlaywrightTimeout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402


def stale_note(session):
    """What the circles' section says of its rows' age, when it shows it."""
    return session.evaluate(
        """() => { const n = document.querySelector('#circles-section .stale');
                   return n && n.offsetParent !== null ? n.textContent : null; }"""
    )


def work(session, job):
    page = session.page
    seen = {}
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    seen["before"] = session.text("#stream")
    os.kill(job["pid"], signal.SIGSTOP)
    try:
        # The page's watchdog gives up on a stream silent for 5 s; allow
        # twice that for its timers on a loaded machine.
        try:
            page.wait_for_function(
                "() => document.getElementById('stream').textContent !== 'live'",
                timeout=10000,
            )
        except PlaywrightTimeout:
            pass
        seen["stalled"] = session.text("#stream")
        seen["stalled_phase"] = session.text("#phase")
        seen["stalled_note"] = stale_note(session)
    finally:
        os.kill(job["pid"], signal.SIGCONT)
    # Back: the page is live again.
    page.wait_for_function(
        "() => document.getElementById('stream').textContent === 'live'", timeout=15000
    )
    seen["after"] = session.text("#stream")
    seen["after_phase"] = session.text("#phase")
    seen["after_note"] = stale_note(session)
    return seen


if __name__ == "__main__":
    browserkit.main(work)
