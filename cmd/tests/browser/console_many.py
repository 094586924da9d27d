"""The browser console (``/``) with many circles, as an operator uses it:
text selected in the table (a circle's URL, to copy it) while events keep
coming, and the work the page does for each event.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``circles``
(how many rows the table shows), ``circle`` (the id whose URL is selected).

Each canvas's draws are counted (``clearRect`` starts every draw). The
result: the rows' ids, the selection before and after two more seconds of
events, and for each chart its draws and its samples.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402

COUNT_DRAWS = """
window.__draws = new WeakMap();
const clear = CanvasRenderingContext2D.prototype.clearRect;
CanvasRenderingContext2D.prototype.clearRect = function (...args) {
  window.__draws.set(this.canvas, (window.__draws.get(this.canvas) || 0) + 1);
  return clear.apply(this, args);
};
"""


def work(session, job):
    page = session.page
    page.add_init_script(COUNT_DRAWS)
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    seen = {}
    seen["ids"] = session.evaluate(
        "() => [...document.querySelectorAll('#circles tbody tr')].map((tr) => Number(tr.dataset.id))"
    )
    seen["selected_before"] = session.evaluate(
        """(id) => { const td = document.querySelector(`#circles tr[data-id="${id}"]`).cells[4];
                    const r = document.createRange(); r.selectNodeContents(td);
                    const s = getSelection(); s.removeAllRanges(); s.addRange(r);
                    return s.toString(); }""",
        str(job["circle"]),
    )
    # Two more seconds of events: the header's uptime moves twice.
    for _ in range(2):
        up = session.text("#uptime")
        page.wait_for_function("(up) => document.getElementById('uptime').textContent !== up", arg=up)
    seen["selected_after"] = session.evaluate("() => getSelection().toString()")
    seen["charts"] = session.evaluate(
        """() => [...document.querySelectorAll('#circles canvas')].map((c) =>
             ({draws: window.__draws.get(c) || 0, points: Number(c.dataset.points || 0)}))"""
    )
    seen["pageerrors"] = [line for line in session.console if "pageerror" in line]
    return seen


if __name__ == "__main__":
    browserkit.main(work)
