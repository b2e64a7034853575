// The console's live parts: apply progress, confirm countdown, port rate charts.
// Everything arrives over one websocket (/ws/console/); no inline scripts (CSP).
(function () {
  "use strict";
  const body = document.body;
  const csrf = body.dataset.csrf;
  let confirming = null;

  function banner(text) {
    const b = document.getElementById("live-banner");
    if (!b) return;
    b.textContent = text;
    b.hidden = !text;
  }

  // `left`: the seconds the box says remain (its own clock does not jump; the browser's and the
  // box's wall clocks may disagree), else the deadline's wall time.
  function startConfirm(id, deadlineIso, left) {
    const box = document.getElementById("confirm-box");
    if (!box || String(box.dataset.apply) !== String(id) || confirming === id) return;
    confirming = id;
    box.hidden = false;
    const deadline = (left !== undefined && left !== null && left !== "") ? Date.now() + Number(left) * 1000
      : deadlineIso ? Date.parse(deadlineIso) : Date.now() + 60000;
    const count = document.getElementById("countdown");
    const timer = setInterval(function () {
      const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      if (count) count.textContent = left;
      if (left <= 0) clearInterval(timer);
    }, 250);
    // Confirm by ourselves as long as the box answers: if the change cut us
    // off, these requests fail and the box rolls back at the deadline.
    function attempt() {
      if (Date.now() > deadline) return;
      fetch("/applies/" + id + "/confirm/", {method: "POST", credentials: "same-origin",
        headers: {"X-CSRFToken": csrf, "Accept": "application/json"}})
        .then(function (r) { if (!r.ok && r.status !== 409) throw new Error(r.status); return r.json(); })
        .then(function (d) { if (d.state !== "confirmed") setTimeout(attempt, 2000); })
        .catch(function () { setTimeout(attempt, 2000); });
    }
    setTimeout(attempt, 1500);
  }

  // The log as numbered lines: events carry their line number, and on
  // (re)connect the whole log is fetched, so nothing said meanwhile is lost.
  let logLines = null;
  function renderLog(log) {
    log.textContent = logLines.filter(function (l) { return l !== undefined; }).map(function (l) { return l + "\n"; }).join("");
  }
  function loadLog() {
    const log = document.getElementById("apply-log");
    if (!log) return;
    fetch("/api/applies/" + log.dataset.apply + "/", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (rec) {
        rec.log.split("\n").slice(0, -1).forEach(function (l, i) { if (logLines[i] === undefined) logLines[i] = l; });
        renderLog(log);
        if (rec.state) onApply({kind: "apply", id: rec.id, state: rec.state, deadline: rec.confirm_deadline,
                                    left: rec.confirm_seconds_left});
      }).catch(function () {});
  }

  function onApply(ev) {
    const log = document.getElementById("apply-log");
    if (log && String(log.dataset.apply) === String(ev.id) && ev.line) {
      if (ev.n) logLines[ev.n - 1] = ev.line; else logLines.push(ev.line);
      renderLog(log);
    }
    const st = document.getElementById("apply-state");
    if (st && String(st.dataset.apply) === String(ev.id)) {
      st.textContent = ev.state;
      st.className = "state-" + ev.state;
    }
    if (ev.state === "awaiting_confirm") startConfirm(ev.id, ev.deadline, ev.left);
    const box = document.getElementById("confirm-box");
    if (box && String(box.dataset.apply) === String(ev.id) && ev.state !== "awaiting_confirm" && ev.state !== "running") {
      box.hidden = true;
    }
    banner(ev.state === "running" || ev.state === "queued" || ev.state === "awaiting_confirm"
      ? "Apply #" + ev.id + ": " + ev.state.replace("_", " ") + (ev.line ? " — " + ev.line : "") : "");
  }

  // -- port rate charts ----------------------------------------------------
  const charts = {};
  const last = {};
  const KEEP = 60;
  function onPorts(ev) {
    const holder = document.getElementById("port-charts");
    if (!holder) return;
    const note = document.getElementById("charts-note");
    if (!ev.ok) { if (note) note.textContent = ev.problem; return; }
    if (note) note.remove();
    ev.ports.forEach(function (p) {
      const prev = last[p.name];
      last[p.name] = p;
      if (!prev) return;
      const dt = Math.max(0.001, p.time - prev.time);
      const rx = Math.max(0, (p.rx_bytes - prev.rx_bytes) / dt);
      const tx = Math.max(0, (p.tx_bytes - prev.tx_bytes) / dt);
      let c = charts[p.name];
      if (!c) {
        const div = document.createElement("div");
        div.className = "chart";
        div.id = "chart-" + p.name;
        holder.appendChild(div);
        c = charts[p.name] = {data: [[], [], []], plot: null, div: div};
        if (window.uPlot) {
          c.plot = new uPlot({title: p.name + " (" + p.role + ")", width: 460, height: 180,
            series: [{}, {label: "rx B/s", stroke: "#2a7"}, {label: "tx B/s", stroke: "#27c"}]}, c.data, div);
        }
      }
      c.data[0].push(p.time); c.data[1].push(rx); c.data[2].push(tx);
      if (c.data[0].length > KEEP) c.data.forEach(function (s) { s.shift(); });
      c.div.dataset.points = c.data[0].length;
      if (c.plot) c.plot.setData(c.data);
    });
  }

  function connect() {
    if (!body.dataset.user) return;
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/console/");
    ws.onmessage = function (m) {
      const ev = JSON.parse(m.data);
      if (ev.kind === "apply") onApply(ev);
      else if (ev.kind === "ports") onPorts(ev);
    };
    ws.onopen = function () { body.dataset.live = "1"; loadLog(); };
    ws.onclose = function () { body.dataset.live = ""; setTimeout(connect, 2000); };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".ts").forEach(function (el) {
      const t = Number(el.dataset.ts); if (t) el.textContent = new Date(t * 1000).toLocaleString();
    });
    document.body.addEventListener("htmx:afterSwap", function (e) {
      e.target.querySelectorAll(".ts").forEach(function (el) {
        const t = Number(el.dataset.ts); if (t) el.textContent = new Date(t * 1000).toLocaleString();
      });
    });
    const log = document.getElementById("apply-log");
    logLines = log ? log.textContent.split("\n").slice(0, -1) : [];
    const box = document.getElementById("confirm-box");
    if (box && !box.hidden) startConfirm(box.dataset.apply, box.dataset.deadline, box.dataset.left);
    connect();
  });
})();
