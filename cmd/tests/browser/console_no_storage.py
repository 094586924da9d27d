"""The browser console (``/``) in a browser that blocks the site's data
(reading ``sessionStorage`` or ``localStorage`` throws), or whose storage
reads but refuses every write (a quota of nothing: ``setItem`` throws
``QuotaExceededError``), on an admin endpoint that needs its token.

Job (besides browserkit's keys, ``block_site_data`` true for the first):
``url`` (``http://ADDR/``), ``token`` (the admin token), ``circles`` (how
many rows the table shows), ``circle`` (an open circle's id),
``refuse_writes`` (true for the second).

Steps: the page asks for the token (answered), the table fills, a script
runs. The result: the prompts, the rows, the stream indicator, the run's
output and the history shown.
"""

import os
import sys

from playwright.sync_api import TimeoutError as PlaywrightTimeout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402
from admin_console import run_script  # noqa: E402


def work(session, job):
    page = session.page
    seen = {}
    dialogs = []

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.accept(job["token"])

    page.on("dialog", on_dialog)
    if job.get("refuse_writes"):
        page.add_init_script(
            "Storage.prototype.setItem = function () {"
            " throw new DOMException('The quota has been exceeded.', 'QuotaExceededError'); };"
        )
    seen["storage"] = None
    session.open(job["url"])
    seen["storage"] = session.evaluate(
        "() => { try { sessionStorage.length; return 'readable'; } catch (e) { return e.name; } }"
    )
    try:
        browserkit.console_live(page, job["circles"])
    except PlaywrightTimeout:
        pass
    seen["stream"] = session.text("#stream")
    seen["rows"] = session.evaluate("() => document.querySelectorAll('#circles tbody tr').length")
    seen["dialogs"] = len(dialogs)
    seen["dialog_texts"] = dialogs[:3]
    if seen["rows"]:
        seen["run"] = run_script(session, job["circle"], "40 + 2")
        seen["history"] = session.evaluate(
            "() => [...document.querySelectorAll('#history button')].map((b) => b.textContent)"
        )
    seen["pageerrors"] = [line for line in session.console if "pageerror" in line]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
