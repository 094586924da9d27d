"""The browser console (``/``) of an admin endpoint that needs its token.

The page opens without the token (a navigation cannot send one); its event
stream answers 401, so the page asks with ``prompt()``. Job (besides
browserkit's keys): ``url`` (``http://ADDR/``), ``token`` (the admin token),
``circles`` (how many rows the table must show).

Steps: a wrong token first (the page asks again, saying so), then the right
one (the table fills); a reload of the page asks nothing (the token is kept
in sessionStorage); a fresh tab whose prompt is dismissed asks once and
says the token is needed. The result holds what the page showed; the Rust
test asserts it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402

TOKEN_KEY = "circles.console.admin_token"


def work(session, job):
    page = session.page
    seen = {}

    dialogs = []
    answers = ["not-the-token", job["token"]]

    def on_dialog(dialog):
        dialogs.append({"type": dialog.type, "message": dialog.message})
        if answers:
            dialog.accept(answers.pop(0))
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    seen["dialogs"] = list(dialogs)
    seen["names"] = session.evaluate(
        "() => [...document.querySelectorAll('#circles tbody tr')].map((tr) => tr.cells[0].textContent)"
    )
    seen["stored"] = session.evaluate(f"() => sessionStorage.getItem('{TOKEN_KEY}')")

    # Reloaded: the token is kept for the tab, nothing is asked.
    page.reload(wait_until="load")
    browserkit.console_live(page, job["circles"])
    page.wait_for_timeout(1500)
    seen["dialogs_after_reload"] = len(dialogs)

    # A fresh tab (its own sessionStorage) whose prompt is dismissed: asked
    # once, then the page says a token is needed instead of asking again.
    fresh = session.browser.new_page()
    fresh.set_default_timeout(10000)
    fresh_dialogs = []

    def dismiss(dialog):
        fresh_dialogs.append(dialog.message)
        dialog.dismiss()

    fresh.on("dialog", dismiss)
    fresh.goto(job["url"], wait_until="load")
    fresh.wait_for_function(
        "() => document.getElementById('stream').textContent.includes('token needed')"
    )
    fresh.wait_for_timeout(2500)
    seen["dismissed"] = {
        "dialogs": len(fresh_dialogs),
        "stream": fresh.text_content("#stream"),
        "rows": fresh.evaluate("() => document.querySelectorAll('#circles tbody tr').length"),
    }
    fresh.close()
    seen["console"] = [line for line in session.console if "pageerror" in line]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
