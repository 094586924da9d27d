"""A minimal console page, used the way a person would: type a script into a
textarea, click Run, read the answer, take a screenshot.

Job (besides browserkit's keys): ``url`` (the circle's ``ws://`` or
``wss://`` URL), ``script``, ``protocols`` (optional, for example
``["bearer.<token>"]``), ``screenshot`` (a PNG path, optional).
Result: ``{"answer": the text the page shows}``: the script's ``output``, or
``error <code>: <message>`` when the circle answered with an error.
"""

import os
from urllib.parse import urlencode
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402

PAGE = """<!doctype html>
<title>circle console</title>
<textarea id="script" rows="4" cols="60"></textarea>
<button id="run">Run</button>
<pre id="answer"></pre>
<script>
const params = new URLSearchParams(location.search);
const answer = document.getElementById("answer");
document.getElementById("run").addEventListener("click", () => {
  answer.textContent = "";
  const ws = new WebSocket(params.get("ws"), params.getAll("protocol"));
  ws.onopen = () => ws.send(JSON.stringify({jsonrpc: "2.0", id: 1, method: "play",
    params: {script: document.getElementById("script").value}}));
  ws.onmessage = (e) => {
    const reply = JSON.parse(e.data);
    answer.textContent = reply.error
      ? `error ${reply.error.code}: ${reply.error.message}` : reply.result.output;
    ws.close();
  };
  ws.onerror = () => { answer.textContent = "error: the connection failed"; };
});
</script>
"""


def work(session, job):
    query = [("ws", job["url"])] + [("protocol", p) for p in job.get("protocols", [])]
    session.open(session.site.url("/?" + urlencode(query)))
    session.type("#script", job["script"])
    session.click("#run")
    answer = session.wait_text("#answer", "(t) => t.length > 0")
    if job.get("screenshot"):
        session.screenshot(job["screenshot"])
    return {"answer": answer}


if __name__ == "__main__":
    browserkit.main(work, pages={"/": PAGE})
