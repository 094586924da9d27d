"use strict";
(() => {
  const HISTORY_KEY = "circles.console.history";
  const HISTORY_MAX = 30;
  const CHART_SAMPLES = 180; // about one a second: the last three minutes
  const $ = (id) => document.getElementById(id);
  const charts = new Map();  // circle id -> {samples: [{t, tput, lat}], last}
  let snapshot = null;
  let updated = null; // when the last snapshot came

  // ---- live table, pushed by the server as server-sent events ----
  // A browser that blocks the site's data throws on every use of its
  // storage, one with a quota of nothing on every write: the token and the
  // history are then kept by the page alone.
  const TOKEN_KEY = "circles.console.admin_token";
  let heldToken = "";
  function adminToken() {
    if (heldToken) return heldToken;
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
  }
  function keepToken(t) {
    heldToken = t;
    try { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); } catch { /* held above */ }
  }

  // Events come at least once a second: a stream silent this long has
  // stalled (the orchestrator stopped, a link or proxy hangs) and is dropped.
  const STALLED_MS = 5000;

  // No more updates: the rows and the phase are the last ones received, and
  // the page says so (an orchestrator gone still shows "running" otherwise).
  function stale() {
    if (!snapshot) return;
    $("phase").textContent = "unknown";
    $("circles-section").classList.add("stale");
    $("stale").textContent = `Rows not updated since ${updated.toLocaleTimeString()}: they show the last update received.`;
    $("stale").classList.remove("hidden");
  }

  async function follow() {
    const stream = $("stream");
    for (;;) {
      let why = "", wait = 1000;
      const abort = new AbortController();
      let watchdog = null;
      try {
        const headers = { Accept: "text/event-stream" };
        if (adminToken()) headers.Authorization = "Bearer " + adminToken();
        watchdog = setTimeout(() => abort.abort(), STALLED_MS);
        const res = await fetch("api/events", { headers, cache: "no-store", signal: abort.signal });
        if (res.status === 401) {
          const again = adminToken() ? "That token was refused. " : "";
          const t = prompt(again + "This admin endpoint needs its admin token:");
          if (!t || !t.trim()) {
            // Asked once per page load: no prompt loop after a Cancel.
            keepToken("");
            stream.dataset.state = "down"; stream.textContent = "admin token needed (reload the page to enter it)";
            stale();
            return;
          }
          keepToken(t.trim());
          continue;
        }
        if (!res.ok || !res.body) {
          // The endpoint's answer says why (503: too many event streams or
          // connections); its Retry-After, when it sends one, paces the retries.
          const text = res.ok ? "" : (await res.text().catch(() => "")).trim().slice(0, 200);
          why = "HTTP " + res.status + (text ? ": " + text : "");
          const after = Number(res.headers.get("Retry-After"));
          if (after > 0) wait = Math.min(after, 30) * 1000;
          throw new Error(why);
        }
        stream.dataset.state = "live"; stream.textContent = "live";
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          clearTimeout(watchdog);
          watchdog = setTimeout(() => abort.abort(), STALLED_MS);
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end;
          while ((end = buf.indexOf("\n\n")) >= 0) {
            const event = buf.slice(0, end); buf = buf.slice(end + 2);
            const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
            if (data) onSnapshot(JSON.parse(data));
          }
        }
      } catch (e) { /* shown below, then retried */ }
      clearTimeout(watchdog);
      abort.abort();
      stream.dataset.state = "down"; stream.textContent = "reconnecting" + (why ? ` (${why})` : "");
      stale();
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  function fmtUptime(s) {
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    const h = Math.floor(s / 3600); return h + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }
  const dash = (v) => (v === null || v === undefined ? "-" : String(v));

  function onSnapshot(snap) {
    snapshot = snap;
    updated = new Date();
    $("circles-section").classList.remove("stale");
    $("stale").classList.add("hidden");
    $("phase").textContent = snap.phase;
    $("redis").textContent = snap.redis_url + (snap.redis_managed ? " (managed)" : "");
    $("data-dir").textContent = snap.data_dir;
    $("uptime").textContent = fmtUptime(snap.uptime_secs);
    // As the terminal table's header says it: the last reload's error, if any.
    const reloadError = snap.reload && snap.reload.error ? snap.reload.error.message : "";
    const changed = (s) => s && (s.added.length + s.removed.length + s.changed.length) > 0;
    const partly = reloadError && changed(snap.reload.summary);
    $("reload-error").textContent = !reloadError ? ""
      : (partly ? "reload partly applied: " : "reload failed, nothing changed: ") + reloadError;
    const now = performance.now();
    const tbody = $("circles").tBodies[0];
    const seen = new Set();
    for (const c of snap.circles) {
      seen.add(String(c.id));
      let tr = tbody.querySelector(`tr[data-id="${c.id}"]`);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.id = c.id;
        for (let i = 0; i < 14; i++) tr.appendChild(document.createElement("td"));
        const cell = document.createElement("td");
        const canvas = document.createElement("canvas");
        canvas.className = "chart"; canvas.width = 360; canvas.height = 80;
        canvas.setAttribute("role", "img");
        cell.appendChild(canvas); tr.appendChild(cell);
        const playCell = document.createElement("td");
        const play = document.createElement("button");
        play.type = "button"; play.className = "play"; play.textContent = "Play";
        play.addEventListener("click", () => {
          $("circle").value = tr.dataset.id;
          $("script").focus();
        });
        playCell.appendChild(play); tr.appendChild(playCell);
      }
      // In the snapshot's order (circles.json's, also after a reload that
      // only reordered it); a row in place is not moved (nor its focus lost).
      const at = tbody.rows[seen.size - 1];
      if (at !== tr) tbody.insertBefore(tr, at || null);
      const access = c.principals ? c.principals + (c.principals === 1 ? " principal" : " principals") : "open";
      const cells = [c.name, c.id, c.worker + (c.worker_detail ? ": " + c.worker_detail : ""), c.queue_key, c.url, access,
        c.server + (c.server_detail ? ": " + c.server_detail : ""), dash(c.gateway_count), dash(c.queue_len), dash(c.processed), dash(c.failed),
        c.clients, fmtUptime(c.uptime_secs), c.restarts];
      // Only a cell whose text changed is written: a write replaces the
      // cell's text, which takes away a selection in it (a URL being copied).
      cells.forEach((v, i) => { if (tr.cells[i].textContent !== String(v)) tr.cells[i].textContent = v; });
      tr.cells[2].className = "status-" + c.worker; tr.cells[6].className = "status-" + c.server;
      for (const i of [1, 7, 8, 9, 10, 11, 12, 13]) tr.cells[i].classList.add("num");
      tr.cells[15].firstChild.setAttribute("aria-label", "Play a script on " + c.name);
      // Drawn when it gets a sample or a name, not at every event.
      const canvas = tr.cells[14].firstChild;
      if (sample(c, now) || canvas.dataset.name !== c.name) {
        canvas.dataset.name = c.name;
        draw(canvas, charts.get(String(c.id)), c.name);
      }
    }
    for (const tr of [...tbody.rows]) if (!seen.has(tr.dataset.id)) { tr.remove(); charts.delete(tr.dataset.id); }
    fillCircles(snap.circles);
  }

  // Throughput and mean latency between two snapshots, from the end-to-end
  // totals the worker records for every finished task (the processed and
  // failed counters, read from Redis less often, when there are none).
  // Whether it took a sample.
  function sample(c, now) {
    const key = String(c.id);
    let ch = charts.get(key);
    if (!ch) { ch = { samples: [], last: null }; charts.set(key, ch); }
    const done = typeof c.latency_count === "number" ? c.latency_count : (c.processed || 0) + (c.failed || 0);
    const cur = { t: now, done, sum: c.latency_sum_seconds || 0, count: c.latency_count || 0 };
    if (ch.last && now - ch.last.t >= 500) {
      const dt = (now - ch.last.t) / 1000;
      const dn = Math.max(0, cur.done - ch.last.done);
      const dc = cur.count - ch.last.count;
      const lat = dc > 0 ? ((cur.sum - ch.last.sum) / dc) * 1000 : null;
      ch.samples.push({ tput: dn / dt, lat });
      if (ch.samples.length > CHART_SAMPLES) ch.samples.shift();
      ch.last = cur;
      return true;
    }
    if (!ch.last) ch.last = cur;
    return false;
  }

  function draw(canvas, ch, name) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.clearRect(0, 0, w, h);
    const s = ch.samples;
    canvas.dataset.points = String(s.length);
    // Samples with tasks finished or a latency measured: the ones that show work.
    canvas.dataset.busy = String(s.filter((p) => p.tput > 0 || p.lat !== null).length);
    const lastT = s.length ? s[s.length - 1].tput : 0;
    const lats = s.filter((p) => p.lat !== null);
    const lastL = lats.length ? lats[lats.length - 1].lat : null;
    canvas.setAttribute("aria-label", `${name}: ${lastT.toFixed(1)} tasks/s` + (lastL === null ? "" : `, ${lastL.toFixed(1)} ms mean latency`));
    ctx.strokeStyle = "#2a3440"; ctx.lineWidth = 1; ctx.beginPath();
    ctx.moveTo(0, h - 2.5); ctx.lineTo(w, h - 2.5); ctx.stroke();
    if (!s.length) return;
    // Until the window fills, the samples so far span the width (at least 30
    // sample widths each, so a few points are not stretched).
    const step = w / Math.min(CHART_SAMPLES - 1, Math.max(30, s.length - 1));
    const x0 = w - (s.length - 1) * step;
    const line = (vals, max, color) => {
      ctx.strokeStyle = color; ctx.fillStyle = color; ctx.lineWidth = 2; ctx.beginPath();
      let started = false;
      vals.forEach((v, i) => {
        if (v === null) { started = false; return; }
        const x = x0 + i * step, y = h - 3 - (max > 0 ? (v / max) * (h - 8) : 0);
        if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y);
        ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
      });
      ctx.stroke();
    };
    const tp = s.map((p) => p.tput);
    const la = s.map((p) => p.lat);
    line(tp, Math.max(1, ...tp), "#4aa3ff");
    line(la, Math.max(1, ...la.filter((v) => v !== null)), "#d29922");
  }

  // ---- playground ----
  function fillCircles(circles) {
    const sel = $("circle");
    const current = sel.value;
    // An option per circle, labelled with its name and access: a reload that
    // renames a circle or changes its principals keeps its id.
    const label = (c) => `${c.name} (${c.id})` + (c.principals ? " · token needed" : "");
    const want = JSON.stringify(circles.map((c) => [String(c.id), label(c)]));
    if (sel.dataset.ids === want) return;
    sel.dataset.ids = want;
    // A picked circle a reload removed stays picked, marked so: a run is
    // never sent to another circle than the one the user chose.
    const picked = sel.selectedIndex >= 0 ? sel.options[sel.selectedIndex] : null;
    const kept = circles.some((c) => String(c.id) === current);
    const gone = picked && !kept ? picked.textContent + (picked.disabled ? "" : " · removed") : null;
    sel.textContent = "";
    for (const c of circles) {
      const o = document.createElement("option");
      o.value = String(c.id);
      o.textContent = label(c);
      sel.appendChild(o);
    }
    if (kept) sel.value = current;
    else if (gone) {
      const o = document.createElement("option");
      o.value = current; o.textContent = gone; o.disabled = true;
      sel.appendChild(o); sel.value = current;
    }
  }

  // The circle's own WebSocket endpoint, exactly as any client reaches it; an
  // unspecified bind address means "this host".
  function circleUrl(c) {
    const u = new URL(c.url);
    if (["0.0.0.0", "[::]", "::"].includes(u.hostname)) u.hostname = location.hostname;
    return u.toString();
  }

  function updateGutter(errLine) {
    const n = $("script").value.split("\n").length;
    const g = $("gutter");
    g.textContent = "";
    for (let i = 1; i <= n; i++) {
      const span = document.createElement("span");
      span.textContent = String(i);
      if (i === errLine) { span.className = "error-line"; span.title = "the error is on this line"; }
      g.appendChild(span); if (i < n) g.appendChild(document.createTextNode("\n"));
    }
    g.scrollTop = $("script").scrollTop;
  }

  function show(id, text) {
    $(id).textContent = text;
    $(id + "-box").classList.toggle("hidden", text === null || text === undefined || text === "");
  }

  let nextId = 1;
  let running = false;
  let cancelRun = () => {};
  function run() {
    if (running) return;
    const circle = snapshot && snapshot.circles.find((c) => String(c.id) === $("circle").value);
    if (!circle) {
      const picked = $("circle").selectedIndex >= 0 && $("circle").options[$("circle").selectedIndex];
      if (picked && picked.disabled) {
        $("run-state").textContent = "failed";
        show("output", ""); show("printed", ""); $("timing").textContent = "";
        show("error", "the circle picked was removed by a reload of circles.json: pick another");
      } else $("run-state").textContent = "no circle to run on";
      return;
    }
    const script = $("script").value;
    const token = $("token").value.trim();
    const state = $("run-state");
    state.textContent = "running on " + circle.name + "…";
    running = true;
    $("run").disabled = true;
    $("cancel").classList.remove("hidden");
    show("output", ""); show("printed", ""); show("error", ""); $("timing").textContent = "";
    updateGutter(null);
    const started = performance.now();
    let ws;
    try {
      ws = token ? new WebSocket(circleUrl(circle), ["bearer." + token]) : new WebSocket(circleUrl(circle));
    } catch (e) { finish(circle, script, { failed: "cannot connect: " + e.message }); return; }
    const id = nextId++;
    let answered = false;
    // No deadline of the page's own: the circle answers within its
    // --task-timeout, whatever that is. Cancel closes the connection, which
    // cancels the script.
    cancelRun = () => {
      if (answered) return;
      answered = true; ws.close(1000);
      finish(circle, script, { failed: "cancelled: the connection was closed, which cancels the script", cancelled: true });
    };
    let opened = false;
    ws.onopen = () => { opened = true; ws.send(JSON.stringify({ jsonrpc: "2.0", id, method: "play", params: { script } })); };
    ws.onmessage = (m) => {
      let reply; try { reply = JSON.parse(m.data); } catch { return; }
      if (reply.id !== id || answered) return;
      answered = true; ws.close(1000);
      finish(circle, script, { reply, elapsed: performance.now() - started });
    };
    ws.onclose = (e) => {
      if (answered) return;
      answered = true;
      // A browser hides the upgrade's answer: a token refused (401, or 429
      // after many wrong ones), this page's origin refused (403) and a
      // circle out of reach look the same.
      const loopback = ["localhost", "[::1]"].includes(location.hostname) || /^127\./.test(location.hostname);
      const why = opened ? ""
        : circle.principals && !token ? " — this circle needs a token"
        : " — the circle refused the connection or cannot be reached"
          + (circle.principals ? ": the token was refused (wrong, or revoked by a reload)?" : "")
          + (loopback ? "" : `; a console at ${location.origin}, not a loopback address, needs --allowed-origin ${location.origin}`);
      finish(circle, script, { failed: `connection closed before an answer (code ${e.code}${e.reason ? ": " + e.reason : ""})` + why });
    };
  }

  function finish(circle, script, { reply, failed, cancelled, elapsed }) {
    running = false;
    cancelRun = () => {};
    $("run").disabled = false;
    $("cancel").classList.add("hidden");
    const entry = { circle: circle.id, name: circle.name, script, at: Date.now() };
    if (failed) {
      $("run-state").textContent = cancelled ? "cancelled" : "failed";
      show("error", failed);
      entry.ok = false; entry.summary = failed;
    } else if (reply.error) {
      const d = reply.error.data || {};
      const where = d.line ? ` at line ${d.line}, column ${d.column}` : "";
      show("error", `${reply.error.code} (${d.kind || "error"})${where}: ${reply.error.message}`);
      $("run-state").textContent = "error";
      if (d.line) {
        updateGutter(d.line);
        markPosition(d.line, d.column || 1);
      }
      entry.ok = false; entry.summary = reply.error.message;
      $("timing").textContent = `round trip ${elapsed.toFixed(1)} ms` + (d.task_id ? ` · task ${d.task_id}` : "");
    } else {
      const r = reply.result;
      show("output", r.output === "" ? "(unit)" : r.output);
      show("printed", typeof r.printed === "string" ? r.printed.replace(/\n$/, "") : "");
      $("run-state").textContent = "done";
      entry.ok = true; entry.summary = r.output;
      const ran = typeof r.run_time_ms === "number" ? `ran ${r.run_time_ms.toFixed(1)} ms · ` : "";
      $("timing").textContent = `${ran}round trip ${elapsed.toFixed(1)} ms · task ${r.task_id || "-"}`;
    }
    remember(entry);
  }

  // The engine counts a line's columns in characters, a string's index in
  // UTF-16 units (an emoji is two): the cursor goes to the column's
  // character, the selection over that one character.
  function markPosition(line, column) {
    const ta = $("script");
    const lines = ta.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
    const chars = Array.from(lines[line - 1] || "");
    const before = chars.slice(0, Math.max(column - 1, 0));
    const at = start + before.join("").length;
    const under = chars[before.length] || "";
    ta.focus();
    ta.setSelectionRange(at, at + under.length);
  }

  // ---- history, kept in this browser ----
  // What the page keeps when the storage does not hold the newest list.
  let heldHistory = null;
  function loadHistory() {
    if (heldHistory) return heldHistory;
    try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch { return []; }
  }
  // A run is kept with the start of its result only (40 characters are
  // shown; an output may be 1 MiB), and a storage still too full for the
  // list drops its oldest runs, never the newest.
  const SUMMARY_MAX = 200;
  function remember(entry) {
    entry.summary = String(entry.summary).slice(0, SUMMARY_MAX);
    const h = [entry, ...loadHistory()].slice(0, HISTORY_MAX);
    heldHistory = h;
    for (let kept = h; kept.length > 0; kept = kept.slice(0, -1)) {
      // Storage full: the oldest runs are dropped from it, never the newest.
      try { localStorage.setItem(HISTORY_KEY, JSON.stringify(kept)); heldHistory = null; break; } catch { /* storage full or disabled */ }
    }
    renderHistory();
  }
  function renderHistory() {
    const h = loadHistory();
    const ol = $("history");
    ol.textContent = "";
    $("history-empty").classList.toggle("hidden", h.length > 0);
    for (const e of h) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      const mark = document.createElement("span");
      mark.className = e.ok ? "ok" : "err"; mark.textContent = e.ok ? "✓ " : "✗ ";
      b.appendChild(mark);
      b.appendChild(document.createTextNode(`${e.name}: ${e.script.replace(/\s+/g, " ").slice(0, 60)} → ${String(e.summary).slice(0, 40)}`));
      b.title = "Load this script into the editor";
      b.addEventListener("click", () => {
        $("script").value = e.script;
        if ([...$("circle").options].some((o) => o.value === String(e.circle))) $("circle").value = String(e.circle);
        updateGutter(null); $("script").focus();
      });
      li.appendChild(b); ol.appendChild(li);
    }
  }

  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", () => cancelRun());
  $("script").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
    else if (e.key === "Tab" && !e.shiftKey && !e.altKey && !e.ctrlKey) {
      // Tab indents inside the editor; Escape then Tab leaves it (keyboard users are never trapped).
      if (!$("script").dataset.escaped) { e.preventDefault(); document.execCommand("insertText", false, "    "); }
    } else if (e.key === "Escape") { $("script").dataset.escaped = "1"; }
    else delete $("script").dataset.escaped;
  });
  $("script").addEventListener("input", () => updateGutter(null));
  $("script").addEventListener("focus", () => { delete $("script").dataset.escaped; });
  $("script").addEventListener("scroll", () => { $("gutter").scrollTop = $("script").scrollTop; });
  updateGutter(null);
  renderHistory();
  follow();
})();
