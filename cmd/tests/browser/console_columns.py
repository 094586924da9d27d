"""The console's table against ``/api/status``: its column names and, for
each circle, the cells under them.

Job (besides browserkit's keys): ``url`` (the admin endpoint, ``http://ADDR/``),
``circles`` (how many rows the table must show).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402


def work(session, job):
    page = session.page
    session.open(job["url"])
    browserkit.console_live(page, job["circles"])
    # Until the counters are read once, Gateways is null: wait for a number.
    page.wait_for_function(
        "() => fetch('api/status').then((r) => r.json())"
        ".then((s) => s.circles.every((c) => typeof c.gateway_count === 'number'))"
    )
    page.wait_for_timeout(1500)
    return session.evaluate(
        """async () => {
          const heads = [...document.querySelectorAll('#circles thead th')].map((th) => th.firstChild.textContent.trim());
          const rows = {};
          for (const tr of document.querySelectorAll('#circles tbody tr')) {
            const cells = {};
            heads.forEach((h, i) => { cells[h] = tr.cells[i].textContent; });
            rows[tr.dataset.id] = cells;
          }
          const status = await (await fetch('api/status')).json();
          return {heads, rows, status};
        }"""
    )


if __name__ == "__main__":
    browserkit.main(work)
