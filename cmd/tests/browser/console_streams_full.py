"""The browser console (``/``) when the admin endpoint holds as many event
streams as it takes: the page's own stream is answered 503.

Job (besides browserkit's keys): ``url`` (``http://ADDR/``), ``release``
(a file the script creates once it has read the page's indicator, for the
test to close one of the streams it holds).

The result: what the stream indicator said while refused, and once a
stream closed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402


def work(session, job):
    page = session.page
    seen = {}
    session.open(job["url"])
    # Refused: the indicator leaves "connecting"; a few retries later it
    # still says the same.
    page.wait_for_function(
        "() => !['connecting', 'live'].includes(document.getElementById('stream').textContent)"
    )
    page.wait_for_timeout(2500)
    seen["refused"] = session.text("#stream")
    seen["rows_refused"] = session.evaluate("() => document.querySelectorAll('#circles tbody tr').length")
    open(job["release"], "w").close()
    page.wait_for_function(
        "() => document.getElementById('stream').textContent === 'live'", timeout=20000
    )
    seen["after"] = session.text("#stream")
    return seen


if __name__ == "__main__":
    browserkit.main(work)
