"""Opens WebSockets from a page the way a browser application does and reports
what the page saw.

Job (besides browserkit's keys): ``probes``, a list of
``{"url": "ws://…/ws" or "wss://…/ws", "protocols": ["bearer.<token>"],
"scripts": ["caller()", …]}``, run one after the other from one page on a
loopback origin. For each probe the page runs
``new WebSocket(url, protocols)``, sends every script as a JSON-RPC ``play``
request (ids 1, 2, …, the next one after the previous reply), then closes;
a probe still open after ``probe_timeout_s`` (default 10 s) ends as
``timed_out``.

Result: ``{"origin": page origin, "probes": [{"opened", "protocol"
(ws.protocol), "replies" (parsed), "error" (an error event fired), "close"
({code, reason, wasClean}), "timed_out", and from Chromium's network log
(the page itself cannot see why an upgrade failed) "handshake_status" (the
HTTP status of an accepted upgrade, else null) and "handshake_error" (why the
upgrade failed, else null; a 401 reads "HTTP Authentication failed; no valid
credentials available")}]}``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browserkit  # noqa: E402

PAGE = "<!doctype html><title>ws probe</title><p>ws probe</p>"

# Runs in the page: one socket, the scripts in order, resolved on close.
PROBE_JS = """
async ({url, protocols, scripts, timeoutMs}) => {
  const out = {opened: false, protocol: null, replies: [], error: false,
               close: null, timed_out: false};
  await new Promise((resolve) => {
    const ws = new WebSocket(url, protocols);
    const timer = setTimeout(() => { out.timed_out = true; resolve(); }, timeoutMs);
    let next = 0;
    const sendNext = () => {
      if (next >= scripts.length) { ws.close(1000, "done"); return; }
      next += 1;
      ws.send(JSON.stringify({jsonrpc: "2.0", id: next, method: "play",
                              params: {script: scripts[next - 1]}}));
    };
    ws.onopen = () => { out.opened = true; out.protocol = ws.protocol; sendNext(); };
    ws.onmessage = (e) => { out.replies.push(JSON.parse(e.data)); sendNext(); };
    ws.onerror = () => { out.error = true; };
    ws.onclose = (e) => {
      out.close = {code: e.code, reason: e.reason, wasClean: e.wasClean};
      clearTimeout(timer);
      resolve();
    };
  });
  return out;
}
"""


def work(session, job):
    session.open(session.site.url("/"))
    # The page cannot see the HTTP status of a refused upgrade; Chromium's
    # network log can.
    cdp = session.page.context.new_cdp_session(session.page)
    statuses = {}
    errors = {}
    urls = {}
    cdp.on("Network.webSocketCreated", lambda e: urls.__setitem__(e["requestId"], e["url"]))
    cdp.on(
        "Network.webSocketHandshakeResponseReceived",
        lambda e: statuses.__setitem__(e["requestId"], e["response"]["status"]),
    )
    cdp.on(
        "Network.webSocketFrameError",
        lambda e: errors.setdefault(e["requestId"], e["errorMessage"]),
    )
    cdp.send("Network.enable")
    timeout_ms = int(job.get("probe_timeout_s", 10) * 1000)
    results = []
    for probe in job["probes"]:
        before = set(urls)
        seen = session.evaluate(
            PROBE_JS,
            {
                "url": probe["url"],
                "protocols": probe.get("protocols", []),
                "scripts": probe.get("scripts", []),
                "timeoutMs": timeout_ms,
            },
        )
        new = [r for r in urls if r not in before]
        if len(new) != 1:
            raise RuntimeError(f"{len(new)} sockets seen for one probe: {probe}")
        seen["handshake_status"] = statuses.get(new[0])
        seen["handshake_error"] = errors.get(new[0])
        results.append(seen)
    return {"origin": session.evaluate("location.origin"), "probes": results}


if __name__ == "__main__":
    browserkit.main(work, pages={"/": PAGE})
