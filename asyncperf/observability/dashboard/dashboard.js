// asyncperf dashboard: reads /api/history once, then one snapshot a second from
// /api/stream (Server-Sent Events), and draws every chart on <canvas> itself.
// No libraries, nothing loaded from elsewhere. Each refresh increments
// <body data-updates> (and the "updates" figure), which the browser test watches.
"use strict";

(function () {
  const MAX_SAMPLES = 300;
  const MAX_DECISIONS = 50;
  const COLORS = [
    "#4fb3ff", "#7ee787", "#f0b72f", "#ff7b72", "#d2a8ff",
    "#56d4dd", "#ffa657", "#a5d6ff", "#e3b341", "#ff9bce",
  ];
  const token = new URLSearchParams(window.location.search).get("token");
  const samples = [];
  // When each decision was first seen, as wall-clock seconds: a decision's own time is on
  // the supervisor's clock (monotonic), which means nothing to a reader.
  const decisionSeen = new Map();
  let lastSeq = -1;
  let updates = 0;

  // -- reading a snapshot (tolerant: a part the runtime lacks reads as nothing) ----

  function withToken(path) {
    return token ? path + "?token=" + encodeURIComponent(token) : path;
  }

  function isNumber(value) {
    return typeof value === "number" && isFinite(value);
  }

  function entries(mapping) {
    return mapping && typeof mapping === "object" ? Object.entries(mapping) : [];
  }

  function list(value) {
    if (Array.isArray(value)) return value;
    return entries(value).map(([key, item]) =>
      item && typeof item === "object" && !("priority" in item) ? { priority: key, ...item } : item);
  }

  // The first of `keys` that is a number in `obj` (nested with "a.b"), or null.
  function pick(obj, ...keys) {
    for (const key of keys) {
      let value = obj;
      for (const part of key.split(".")) {
        value = value && typeof value === "object" ? value[part] : undefined;
      }
      if (isNumber(value)) return value;
    }
    return null;
  }

  function sum(values) {
    let total = 0;
    let any = false;
    for (const value of values) {
      if (isNumber(value)) { total += value; any = true; }
    }
    return any ? total : null;
  }

  function timeOf(snapshot, index) {
    return isNumber(snapshot.time) ? snapshot.time : index;
  }

  function finished(pool) {
    return sum(["completed", "failed", "timed_out", "cancelled"].map((k) => pick(pool, k)));
  }

  function shed(pool) {
    return sum(["rejected", "dropped"].map((k) => pick(pool, k)));
  }

  function lagOf(snapshot) {
    return pick(snapshot, "loop_lag.last", "lag.last", "process.loop_lag.last",
      "process.loop_lag", "process.loop_lag_seconds", "loop_lag", "supervisor.loop_lag");
  }

  function lagP99Of(snapshot) {
    return pick(snapshot, "loop_lag.p99", "lag.p99", "process.loop_lag.p99");
  }

  function gcPauseTotal(snapshot) {
    return pick(snapshot, "gc.pause_total", "gc.pause_seconds_total", "process.gc.pause_total");
  }

  function cacheLevels(snapshot) {
    const levels = [];
    for (const [cacheName, cache] of entries(snapshot.caches)) {
      // Levels are keyed by name ("memory", "disk"); a list names them L1, L2, ...
      const inner = Array.isArray(cache && cache.levels)
        ? cache.levels.map((level, index) => [(level && level.name) || "L" + (index + 1), level])
        : entries(cache && cache.levels);
      if (inner.length === 0) levels.push({ key: cacheName, level: cache });
      for (const [name, level] of inner) levels.push({ key: cacheName + "/" + name, level });
    }
    return levels;
  }

  // Each handler's readings: the runtime's source "handlers" holds "NAME.FIELD" keys.
  function handlersOf(snapshot) {
    const handlers = {};
    const readings = snapshot.sources && snapshot.sources.handlers;
    for (const [key, value] of entries(readings)) {
      const dot = key.lastIndexOf(".");
      if (dot <= 0) continue;
      const name = key.slice(0, dot);
      (handlers[name] = handlers[name] || {})[key.slice(dot + 1)] = value;
    }
    return handlers;
  }

  function queueLevels(snapshot) {
    const levels = [];
    for (const [queueName, queue] of entries(snapshot.queues)) {
      for (const level of list(queue && queue.levels)) {
        levels.push({ key: queueName + "/p" + level.priority, level });
      }
    }
    return levels;
  }

  // -- series: one point per sample, rates from consecutive samples ----------------

  // A named series of [time, value] points, added to by `add`.
  function collector() {
    const series = new Map();
    return {
      add(name, t, value) {
        if (!isNumber(value)) return;
        if (!series.has(name)) series.set(name, []);
        series.get(name).push([t, value]);
      },
      result() {
        return Array.from(series, ([name, points], index) => ({
          name, points, color: COLORS[index % COLORS.length],
        }));
      },
    };
  }

  function rate(now, before, dt, read) {
    const a = read(now);
    const b = read(before);
    if (!isNumber(a) || !isNumber(b) || dt <= 0) return null;
    return Math.max(0, a - b) / dt;
  }

  function buildSeries() {
    const charts = {
      throughput: collector(), latency: collector(), queues: collector(), workers: collector(),
      cache: collector(), gc: collector(), lag: collector(), shed: collector(),
      memory: collector(),
    };
    samples.forEach((snapshot, index) => {
      const t = timeOf(snapshot, index);
      const previous = index > 0 ? samples[index - 1] : null;
      const dt = previous ? t - timeOf(previous, index - 1) : 0;
      for (const [name, pool] of entries(snapshot.pools)) {
        const before = previous && previous.pools ? previous.pools[name] : null;
        if (before) {
          charts.throughput.add(name, t, rate(pool, before, dt, finished));
          charts.shed.add(name, t, rate(pool, before, dt, shed));
        }
        for (const [key, label] of [["wait_p99", "wait p99"], ["run_p50", "run p50"],
          ["run_p99", "run p99"]]) {
          const value = pick(pool, key);
          charts.latency.add(name + " " + label, t, value === null ? null : value * 1000);
        }
        charts.workers.add(name + " workers", t, pick(pool, "workers"));
        charts.workers.add(name + " active", t, pick(pool, "active"));
        charts.workers.add(name + " limit", t, pick(pool, "limit"));
      }
      for (const [name, handler] of entries(handlersOf(snapshot))) {
        const value = pick(handler, "latency_p99");
        charts.latency.add(name + " call p99", t, value === null ? null : value * 1000);
      }
      for (const { key, level } of queueLevels(snapshot)) {
        charts.queues.add(key, t, pick(level, "depth"));
      }
      const previousLevels = previous ? new Map(cacheLevels(previous).map((e) => [e.key, e.level]))
        : new Map();
      for (const { key, level } of cacheLevels(snapshot)) {
        const before = previousLevels.get(key);
        const hits = pick(level, "hits");
        const misses = pick(level, "misses");
        let ratio = null;
        if (before && isNumber(hits) && isNumber(misses)) {
          const dh = hits - (pick(before, "hits") || 0);
          const dm = misses - (pick(before, "misses") || 0);
          // Over the last second; with no lookups in it, the ratio so far.
          if (dh + dm > 0) ratio = dh / (dh + dm);
        }
        if (ratio === null && isNumber(hits) && isNumber(misses) && hits + misses > 0) {
          ratio = hits / (hits + misses);
        }
        charts.cache.add(key, t, ratio === null ? null : ratio * 100);
      }
      if (previous) {
        const pause = rate(snapshot, previous, dt, gcPauseTotal);
        charts.gc.add("pause", t, pause === null ? null : pause * 1000);
      }
      const gcMax = pick(snapshot, "gc.pause_max");
      charts.gc.add("longest", t, gcMax === null ? null : gcMax * 1000);
      const rss = pick(snapshot, "process.rss_bytes");
      charts.memory.add("RSS MiB", t, rss === null ? null : rss / 1048576);
      charts.memory.add("tasks", t, pick(snapshot, "process.tasks"));
      const lag = lagOf(snapshot);
      charts.lag.add("last", t, lag === null ? null : lag * 1000);
      const lagP99 = lagP99Of(snapshot);
      charts.lag.add("p99", t, lagP99 === null ? null : lagP99 * 1000);
    });
    const result = {};
    for (const [name, chart] of Object.entries(charts)) result[name] = chart.result();
    return result;
  }

  // -- drawing ------------------------------------------------------------------

  function formatValue(value) {
    const magnitude = Math.abs(value);
    if (magnitude >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (magnitude >= 1e4) return (value / 1e3).toFixed(0) + "k";
    if (magnitude >= 100 || value === 0) return value.toFixed(0);
    if (magnitude >= 1) return value.toFixed(1);
    return value.toPrecision(2);
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawChart(canvas, series, fixedMax) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(200, canvas.clientWidth);
    const height = Math.max(120, canvas.clientHeight);
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#182029";
    ctx.fillRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";

    const left = 46;
    const right = width - 12;
    const bottom = height - 20;
    // The legend first (each series with its latest value), wrapped: the plot goes below it.
    const legend = [];
    let legendX = left;
    let legendY = 8;
    for (const s of series) {
      const last = s.points[s.points.length - 1][1];
      const label = s.name + " " + formatValue(last);
      const labelWidth = ctx.measureText(label).width + 22;
      if (legendX + labelWidth > right && legendX > left) {
        legendX = left;
        legendY += 14;
      }
      legend.push({ s, label, x: legendX, y: legendY });
      legendX += labelWidth;
    }
    const top = Math.min(legendY + 14, bottom - 40);
    let points = 0;
    let tMin = Infinity;
    let tMax = -Infinity;
    let vMax = 0;
    for (const s of series) {
      for (const [t, v] of s.points) {
        points += 1;
        tMin = Math.min(tMin, t);
        tMax = Math.max(tMax, t);
        vMax = Math.max(vMax, v);
      }
    }
    canvas.dataset.points = String(points);
    const yMax = fixedMax || niceMax(vMax * 1.05);
    // Grid and the value axis.
    ctx.strokeStyle = "#2a3440";
    ctx.fillStyle = "#8a96a3";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i += 1) {
      const y = bottom - ((bottom - top) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(formatValue((yMax * i) / 4), left - 6, y);
    }
    if (points === 0) {
      ctx.textAlign = "center";
      ctx.fillText("no data yet", (left + right) / 2, (top + bottom) / 2);
      return;
    }
    const span = Math.max(tMax - tMin, 1);
    const x = (t) => left + ((t - tMin) / span) * (right - left);
    const y = (v) => bottom - (Math.min(v, yMax) / yMax) * (bottom - top);
    // The time axis: seconds before the newest sample.
    ctx.textBaseline = "top";
    for (let i = 0; i <= 4; i += 1) {
      const t = tMin + (span * i) / 4;
      const ago = tMax - t;
      ctx.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";
      const text = i === 4 ? "now" : "-" + (span < 20 ? ago.toFixed(1) : Math.round(ago)) + "s";
      ctx.fillText(text, x(t), bottom + 4);
    }
    // The lines.
    ctx.lineWidth = 1.6;
    ctx.lineJoin = "round";
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      if (s.points.length === 1) {
        const [t, v] = s.points[0];
        ctx.fillRect(x(t) - 1.5, y(v) - 1.5, 3, 3);
        continue;
      }
      ctx.beginPath();
      s.points.forEach(([t, v], i) => (i === 0 ? ctx.moveTo(x(t), y(v)) : ctx.lineTo(x(t), y(v))));
      ctx.stroke();
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (const item of legend) {
      ctx.fillStyle = item.s.color;
      ctx.fillRect(item.x, item.y - 4, 9, 9);
      ctx.fillStyle = "#d8dee6";
      ctx.fillText(item.label, item.x + 13, item.y);
    }
  }

  // -- the rest of the page -------------------------------------------------------

  function setText(id, text) {
    const element = document.getElementById(id);
    if (element) element.textContent = text;
  }

  function formatBytes(bytes) {
    if (!isNumber(bytes)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return value.toFixed(unit === 0 ? 0 : 1) + " " + units[unit];
  }

  function decisionsOf(snapshot) {
    const supervisor = snapshot.supervisor;
    if (!supervisor) return [];
    return list(supervisor.decisions || supervisor.events);
  }

  function decisionKey(decision) {
    return [decision.supervisor, decision.time, decision.pool, decision.action,
      decision.before, decision.after].join("|");
  }

  function noteDecisions(snapshot) {
    const seenAt = isNumber(snapshot.time) ? snapshot.time : Date.now() / 1000;
    for (const decision of decisionsOf(snapshot)) {
      const key = decisionKey(decision);
      if (!decisionSeen.has(key)) decisionSeen.set(key, seenAt);
    }
    if (decisionSeen.size > 4 * MAX_DECISIONS) {
      const current = new Set(decisionsOf(snapshot).map(decisionKey));
      for (const key of decisionSeen.keys()) if (!current.has(key)) decisionSeen.delete(key);
    }
  }

  function renderDecisions(snapshot) {
    const decisions = decisionsOf(snapshot);
    const body = document.getElementById("decisions");
    setText("decision-count", decisions.length ? "(" + decisions.length + ", newest first)" : "");
    const rows = decisions.slice(-MAX_DECISIONS).reverse();
    const fragment = document.createDocumentFragment();
    if (rows.length === 0) {
      const row = document.createElement("tr");
      const cell = document.createElement("td");
      cell.colSpan = 5;
      cell.className = "empty";
      cell.textContent = "no decisions yet";
      row.appendChild(cell);
      fragment.appendChild(row);
    }
    for (const decision of rows) {
      const row = document.createElement("tr");
      const seen = decisionSeen.get(decisionKey(decision));
      const before = pick(decision, "before");
      const after = pick(decision, "after");
      const cells = [
        [seen === undefined ? "" : new Date(seen * 1000).toLocaleTimeString(), "num"],
        [String(decision.pool ?? ""), ""],
        [String(decision.action ?? ""), "action-" + String(decision.action ?? "")],
        [before === null || after === null ? "" : formatValue(before) + " → " + formatValue(after),
          "num"],
        [String(decision.reason ?? ""), ""],
      ];
      for (const [text, className] of cells) {
        const cell = document.createElement("td");
        cell.textContent = text; // text, never HTML: reasons come from the runtime
        if (className) cell.className = className;
        row.appendChild(cell);
      }
      fragment.appendChild(row);
    }
    body.replaceChildren(fragment);
  }

  function renderFacts(snapshot, series) {
    setText("fact-loop", typeof snapshot.loop === "string" ? snapshot.loop : "–");
    setText("fact-rss", formatBytes(pick(snapshot, "process.rss_bytes", "process.rss")));
    const tasks = pick(snapshot, "process.tasks", "process.task_count", "tasks");
    setText("fact-tasks", tasks === null ? "–" : String(tasks));
    const latest = series.throughput.map((s) => s.points[s.points.length - 1][1]);
    const throughput = sum(latest);
    setText("fact-throughput", throughput === null ? "–" : formatValue(throughput) + "/s");
    const queued = sum(Object.values(snapshot.pools || {}).map((pool) => pick(pool, "pending")));
    setText("fact-queued", queued === null ? "–" : String(queued));
    setText("fact-updates", String(updates));
  }

  function render() {
    if (samples.length === 0) return;
    const latest = samples[samples.length - 1];
    const series = buildSeries();
    for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
      const name = canvas.dataset.chart;
      drawChart(canvas, series[name] || [], name === "cache" ? 100 : 0);
    }
    renderDecisions(latest);
    updates += 1;
    document.body.dataset.updates = String(updates);
    document.body.dataset.seq = String(lastSeq);
    renderFacts(latest, series);
  }

  function ingest(snapshot) {
    if (!snapshot || typeof snapshot !== "object") return false;
    const seq = isNumber(snapshot.seq) ? snapshot.seq : lastSeq + 1;
    if (seq <= lastSeq) return false; // seen already (the stream repeats the newest on connect)
    lastSeq = seq;
    samples.push(snapshot);
    noteDecisions(snapshot);
    if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
    return true;
  }

  function setStatus(text, bad) {
    const element = document.getElementById("status");
    element.textContent = text;
    element.classList.toggle("bad", Boolean(bad));
  }

  function connect() {
    const source = new EventSource(withToken("/api/stream"));
    source.onopen = () => setStatus("live (one update a second)", false);
    source.onmessage = (event) => {
      let snapshot;
      try {
        snapshot = JSON.parse(event.data);
      } catch (error) {
        setStatus("unreadable update: " + error, true);
        return;
      }
      if (ingest(snapshot)) render();
    };
    // EventSource reconnects by itself (after the server's `retry`); just say so.
    source.onerror = () => setStatus("disconnected, retrying…", true);
  }

  async function start() {
    for (const id of ["link-metrics", "link-stats", "link-history"]) {
      const link = document.getElementById(id);
      link.href = withToken(link.getAttribute("href"));
    }
    try {
      const response = await fetch(withToken("/api/history"), { cache: "no-store" });
      if (response.ok) {
        const history = await response.json();
        for (const snapshot of history.snapshots || []) ingest(snapshot);
        render();
      } else {
        setStatus("history: HTTP " + response.status, true);
      }
    } catch (error) {
      setStatus("history: " + error, true);
    }
    connect();
    // Charts follow the window's width.
    window.addEventListener("resize", () => { if (samples.length) render(); });
  }

  start();
})();
