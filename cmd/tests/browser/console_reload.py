"""The browser console (``/``) across reloads of circles.json.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``admin``
(``http://ADDR``), ``config`` (the path of the circles.json the orchestrator
reads), ``renamed`` (that file's text with circle 2 renamed), ``reordered`` (the
renamed file's circles in another order), ``invalid``
(a text that is no circles.json), ``circles`` (how many rows the table shows).

Steps: the table fills; circle 2 is renamed and reloaded (POST /api/reload);
the file's circles are reordered and reloaded; then an invalid file is
reloaded (422). The result holds what the page
showed after each; the Rust test asserts it.
"""

import os
import sys
import time

from playwright.sync_api import TimeoutError as PlaywrightTimeout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402
from admin_console import reload  # noqa: E402


def options(session):
    return session.evaluate(
        "() => [...document.getElementById('circle').options].map((o) => o.textContent)"
    )


def names(session):
    return session.evaluate(
        "() => [...document.querySelectorAll('#circles tbody tr')].map((tr) => tr.cells[0].textContent)"
    )


def work(session, job):
    page = session.page
    seen = {}
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    seen["options_before"] = options(session)

    # Circle 2 renamed: the row follows; the playground's list should too.
    seen["renamed_code"] = reload(job, job["renamed"])
    page.wait_for_function(
        "() => [...document.querySelectorAll('#circles tbody tr')]"
        ".some((tr) => tr.cells[0].textContent === 'Orchard')"
    )
    # The playground's list, given a few events to follow.
    try:
        page.wait_for_function(
            "() => [...document.querySelectorAll('#circle option')]"
            ".some((o) => o.textContent.startsWith('Orchard'))",
            timeout=5000,
        )
    except PlaywrightTimeout:
        pass
    seen["names_after_rename"] = names(session)
    seen["options_after_rename"] = options(session)

    # The same circles in another order: the rows follow the file's order,
    # as the status table's and every snapshot's do.
    seen["reordered_code"] = reload(job, job["reordered"])
    seen["snapshot_order"] = session.evaluate(
        "async () => (await (await fetch('api/status')).json()).circles.map((c) => c.name)"
    )
    try:
        page.wait_for_function(
            "(want) => JSON.stringify([...document.querySelectorAll('#circles tbody tr')]"
            ".map((tr) => tr.cells[0].textContent)) === JSON.stringify(want)",
            arg=seen["snapshot_order"],
            timeout=10000,
        )
    except PlaywrightTimeout:
        pass
    seen["names_after_reorder"] = names(session)

    # An invalid file: nothing changes, and the error is in every snapshot.
    seen["invalid_code"] = reload(job, job["invalid"])
    deadline = time.time() + 5
    shown = ""
    while time.time() < deadline and not shown:
        page.wait_for_timeout(250)
        shown = session.text("#reload-error") or ""
    seen["reload_error_shown"] = shown
    seen["pageerrors"] = [line for line in session.console if "pageerror" in line]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
