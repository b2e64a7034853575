// The charts page (/stats/): uPlot charts of the series API, fetched again every 10 s.
// Polled, not pushed: the DNS server writes its counts every 10 s and the devices
// service per minute, so a push could say nothing sooner; the page asks the same API a
// script would, and a page left open costs one request per chart every 10 s.
(function () {
  "use strict";
  const POLL = 10000;
  const TOP = 5;
  const COLORS = ["#27c", "#c33", "#2a7", "#a6c", "#e90", "#555", "#0aa", "#b60"];
  const plots = {};

  function get(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); });
  }

  function series(name, step, since) {
    return get("/api/stats/series/?name=" + encodeURIComponent(name) + "&step=" + step + "&since=" + since);
  }

  // Several series on one time axis: [[t...], [v...], ...]; every answer has the same buckets.
  // Each request ends at its own "now": a minute may have begun between two; all are cut to the shortest.
  function columns(answers) {
    const n = Math.min.apply(null, answers.map(function (a) { return a.points.length; }));
    const out = [answers[0].points.slice(0, n).map(function (p) { return p[0]; })];
    answers.forEach(function (a) { out.push(a.points.slice(0, n).map(function (p) { return p[1]; })); });
    return out;
  }

  function draw(id, title, labels, data, unit) {
    const div = document.getElementById(id);
    if (!div) return;
    div.dataset.points = data[0].length;
    div.dataset.total = data.slice(1).map(function (s) { return s.reduce(function (a, b) { return a + b; }, 0); }).join(",");
    if (!window.uPlot) return;
    const key = id + "|" + labels.join("|");
    if (plots[id] && plots[id].key !== key) { plots[id].plot.destroy(); delete plots[id]; }
    if (plots[id]) { plots[id].plot.setData(data); return; }
    const opts = {title: title, width: Math.min(920, div.parentElement.clientWidth || 920), height: 220,
      series: [{}].concat(labels.map(function (l, i) {
        return {label: l, stroke: COLORS[i % COLORS.length], width: 1.5,
                value: function (u, v) { return v == null ? "-" : (unit ? unit(v) : v.toFixed(0)); }};
      })),
      axes: [{}, {values: function (u, vals) { return vals.map(function (v) { return unit ? unit(v) : v; }); }, size: 70}]};
    plots[id] = {key: key, plot: new uPlot(opts, data, div)};
  }

  function bytes(v) {
    const units = ["B", "KB", "MB", "GB", "TB"];  // as the page's tables (Django's filesizeformat)
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(v < 10 && i ? 1 : 0) + " " + units[i];
  }

  function refresh(holder) {
    const step = Number(holder.dataset.step);
    const since = Math.floor(Date.now() / 1000) - Number(holder.dataset.back);
    const per = step === 60 ? "minute" : "hour";
    const dns = ["dns.queries", "dns.blocked", "dns.forwarded", "dns.cached", "dns.fake_ip"];
    Promise.all(dns.map(function (n) { return series(n, step, since); })).then(function (a) {
      draw("chart-dns", "DNS queries per " + per, ["answered", "blocked", "asked upstream", "from the cache", "fake IPs"],
           columns(a));
      const c = columns(a);
      const share = [c[0], c[1].map(function (q, i) { return q ? 100 * c[2][i] / q : null; })];
      draw("chart-blocked-share", "Blocked share (%)", ["blocked %"], share,
           function (v) { return v.toFixed(1) + "%"; });
      holder.dataset.live = "1";
    }).catch(function (e) { holder.dataset.problem = String(e); });
    Promise.all([series("dev.all.rx_bytes", step, since), series("dev.all.tx_bytes", step, since),
                 get("/api/stats/top-devices/?step=" + step + "&since=" + since + "&limit=" + TOP)])
      .then(function (a) {
        draw("chart-bytes", "All devices, bytes per " + per, ["received", "sent"], columns(a.slice(0, 2)), bytes);
        const devices = a[2].devices;
        if (!devices.length) return;
        return Promise.all(devices.map(function (d) {
          return Promise.all([series("dev." + d.mac + ".rx_bytes", step, since),
                              series("dev." + d.mac + ".tx_bytes", step, since)]);
        })).then(function (pairs) {
          // One line per device: what it received and sent, together.
          const c = columns([].concat.apply([], pairs));
          const data = [c[0]];
          for (let i = 1; i < c.length; i += 2) data.push(c[i].map(function (v, j) { return v + c[i + 1][j]; }));
          draw("chart-devices", "Top devices, bytes per " + per,
               devices.map(function (d) { return d.name || d.mac; }), data, bytes);
        });
      }).catch(function (e) { holder.dataset.problem = String(e); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const holder = document.getElementById("stats-charts");
    if (!holder) return;
    refresh(holder);
    setInterval(function () { refresh(holder); }, POLL);
  });
})();
