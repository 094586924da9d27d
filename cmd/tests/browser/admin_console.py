"""The admin endpoint's browser console (``/``), used the way a person would.

Job (besides browserkit's keys): ``url`` (the admin endpoint, ``http://ADDR/``),
``open`` and ``guarded`` (``{"id", "name"}`` of an open circle and of one that
needs a token), ``token`` (a write token of ``guarded``), ``circles`` (how
many rows the table must show), ``screenshot`` (a PNG path).

The result holds what the page showed at each step; the Rust test asserts it.
"""

import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402


def reload(job, text):
    """Writes `text` to the config and asks for a reload; the HTTP code."""
    with open(job["config"], "w", encoding="utf-8") as f:
        f.write(text)
    req = urllib.request.Request(job["admin"] + "/api/reload", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code


def run_script(session, circle, script, key=False, token=""):
    """Selects `circle`, types `script` and runs it (Run, or Ctrl+Enter when
    `key`); returns what the result area shows once the run is over."""
    page = session.page
    page.select_option("#circle", str(circle))
    session.type("#token", token)
    session.type("#script", script)
    if key:
        page.focus("#script")
        page.keyboard.press("Control+Enter")
    else:
        session.click("#run")
    return result(session)


def result(session):
    """Waits for the run to end; what the page shows."""
    session.wait_text("#run-state", "(t) => ['done', 'error', 'failed'].includes(t)")
    return session.evaluate(
        """() => {
          const shown = (id) => document.getElementById(id + "-box").classList.contains("hidden")
            ? null : document.getElementById(id).textContent;
          return {
            state: document.getElementById("run-state").textContent,
            output: shown("output"),
            printed: shown("printed"),
            error: shown("error"),
            timing: document.getElementById("timing").textContent,
            error_lines: [...document.querySelectorAll("#gutter .error-line")].map((e) => e.textContent),
            gutter: document.getElementById("gutter").textContent,
          };
        }"""
    )


def chart(session, circle):
    """The chart of `circle`'s row: its samples and those showing work."""
    return session.evaluate(
        """(id) => {
          const c = document.querySelector(`#circles tr[data-id="${id}"] canvas`);
          return c && {points: Number(c.dataset.points || 0), busy: Number(c.dataset.busy || 0),
                       label: c.getAttribute("aria-label")};
        }""",
        str(circle),
    )


def work(session, job):
    page = session.page
    page.set_viewport_size({"width": 1280, "height": 900})
    session.open(job["url"])
    seen = {}

    # The live table, pushed by the server.
    browserkit.console_live(page, job["circles"])
    seen["rows"] = session.evaluate(
        """() => [...document.querySelectorAll('#circles tbody tr')].map((tr) => ({
             name: tr.cells[0].textContent, id: tr.cells[1].textContent,
             worker: tr.cells[2].textContent, queue: tr.cells[3].textContent,
             url: tr.cells[4].textContent, access: tr.cells[5].textContent}))"""
    )
    seen["header_phase"] = session.text("#phase")

    opened, guarded = job["open"]["id"], job["guarded"]["id"]
    seen["clicked"] = run_script(
        session, opened, 'let x = 40;\nprint("hello from the console");\nx + 2'
    )
    seen["ctrl_enter"] = run_script(session, opened, "6 * 9", key=True)
    seen["failing"] = run_script(session, opened, "let a = 1;\na + no_such_variable\n")
    for n in range(3):
        run_script(session, opened, f"let n = {n};\nn * 10")

    # The chart draws points showing the work (events come about once a second).
    page.wait_for_function(
        """(id) => { const c = document.querySelector(`#circles tr[data-id="${id}"] canvas`);
                    return c && Number(c.dataset.busy || 0) > 0; }""",
        arg=str(opened),
    )
    seen["chart"] = chart(session, opened)

    # The protected circle: refused without its token, runs with it.
    seen["guarded_no_token"] = run_script(session, guarded, "caller()")
    seen["guarded_token"] = run_script(session, guarded, "caller()", token=job["token"])

    # History: newest first; a click restores the script and its circle.
    seen["history"] = session.evaluate(
        "() => [...document.querySelectorAll('#history button')].map((b) => b.textContent)"
    )
    first = page.locator("#history button").filter(has_text="hello from the console")
    first.first.click()
    seen["restored"] = session.evaluate(
        "() => ({script: document.getElementById('script').value, "
        "circle: document.getElementById('circle').value, "
        "focused: document.activeElement.id})"
    )

    # The keyboard alone: Tab to the editor, type, Ctrl+Enter.
    page.select_option("#circle", str(opened))
    session.type("#token", "")
    session.evaluate("() => document.activeElement && document.activeElement.blur()")
    tabs = 0
    while session.evaluate("() => document.activeElement.id") != "script" and tabs < 60:
        page.keyboard.press("Tab")
        tabs += 1
    seen["tabs_to_editor"] = tabs
    seen["keyboard_focus"] = session.evaluate("() => document.activeElement.id")
    page.keyboard.press("Control+a")
    page.keyboard.type("let s = 0;\nfor i in 1..=4 { s += i; }\nprint(`sum ${s}`);\ns")
    page.keyboard.press("Control+Enter")
    seen["keyboard"] = result(session)
    # Tab indents inside the editor; Escape then Tab leaves it.
    page.focus("#script")
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    seen["after_escape_tab"] = session.evaluate("() => document.activeElement.id || document.activeElement.tagName")

    # A row's Play button picks its circle for the playground.
    page.click('#circles tr[data-id="3"] button.play')
    seen["play_button"] = session.evaluate(
        "() => ({circle: document.getElementById('circle').value, focused: document.activeElement.id})"
    )
    page.select_option("#circle", str(opened))

    # The table follows the counters read from Redis (with plain output
    # they are read every 10 s): Kitchen's 6 scripts that completed.
    page.wait_for_function(
        """(id) => Number(document.querySelector(`#circles tr[data-id="${id}"]`).cells[9].textContent) >= 6""",
        arg=str(opened),
        timeout=30000,
    )
    seen["processed"] = session.evaluate(
        """() => [...document.querySelectorAll('#circles tbody tr')].map((tr) =>
             ({name: tr.cells[0].textContent, processed: tr.cells[9].textContent,
               failed: tr.cells[10].textContent}))"""
    )

    # The screenshot: table, charts and a finished run on screen.
    seen["chart_at_screenshot"] = chart(session, opened)
    page.set_viewport_size({"width": 1600, "height": 900})
    page.wait_for_timeout(100)
    session.screenshot(job["screenshot"])

    # A narrow screen: nothing wider than the viewport but the table's own box.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(200)
    seen["narrow"] = session.evaluate(
        """() => {
          const box = document.querySelector('#circles-section .scroll');
          return {viewport: window.innerWidth,
                  document: document.documentElement.scrollWidth,
                  body: document.body.scrollWidth,
                  table_box: box.clientWidth, table: box.scrollWidth,
                  table_box_scrolls: getComputedStyle(box).overflowX};
        }"""
    )
    seen["console"] = [line for line in session.console if "error" in line.lower()]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
