// DashFrog web UI: flow list, flow detail and stats over the JSON API, kept
// live by the /api/stream server-sent events. Everything that comes from the
// API is untrusted (labels and attributes come from application code): it is
// only ever put in the page with textContent or setAttribute, never as markup.
"use strict";

(() => {
  const { TOKEN_KEY, $, el, token, authHeaders, ApiError, api } = window.DashFrogCommon;
  const PAGE = 50;

  // -- small DOM helpers ---------------------------------------------------

  // replaceChildren() with nested arrays and nulls dropped (it would print them).
  function fill(node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} m ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} m`;
  }

  function fmtAgo(iso) {
    if (!iso) return "–";
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (s < 5) return "just now";
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return fmtTime(iso).slice(0, 10);
  }

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  // The browser's zone as an offset from UTC: "UTC", "UTC+01:00", "UTC-05:00".
  function zoneOf(date) {
    const off = -date.getTimezoneOffset();
    if (off === 0) return "UTC";
    const a = Math.abs(off);
    return `UTC${off > 0 ? "+" : "-"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
  }

  // ISO 8601 order, 24-hour clock, milliseconds, zone: never the locale's format.
  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "–";
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)} ${zoneOf(d)}`;
  }

  // Microseconds since the epoch from the API's ISO strings (Date.parse keeps milliseconds only).
  function usOf(iso) {
    if (!iso) return null;
    const ms = Date.parse(iso);
    if (Number.isNaN(ms)) return null;
    const frac = (iso.match(/\.(\d+)/) || [null, ""])[1];
    return ms * 1000 + Number((frac + "000000").slice(3, 6));
  }

  // A span in milliseconds to the millisecond: "0.8 ms", "351.2 ms", "1.234 s", "2 m 3.456 s".
  function fmtSpan(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return `${ms.toFixed(1)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(3)} s`;
    const m = Math.floor(ms / 60000);
    return `${m} m ${((ms - m * 60000) / 1000).toFixed(3)} s`;
  }

  function statusOf(flow) {
    return flow.status === "running" && flow.stalled ? "stalled" : flow.status;
  }

  const badge = (status) => el("span", { class: `badge status-${status}`, text: status });

  function chips(map, cls = "chip") {
    const entries = Object.entries(map || {});
    if (!entries.length) return null;
    return el("span", { class: "chips" },
      entries.map(([k, v]) => el("span", { class: cls, title: `${k}=${v}` },
        el("span", { class: "k", text: k }), "=", el("span", { class: "v", text: v }))));
  }

  function notice(message) {
    const box = $("#notice");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function apiFailed(err) {
    if (err instanceof ApiError && err.status === 401) {
      notice("This DashFrog API needs a token: paste an admin or tenant token above.");
    } else {
      notice(`Request failed: ${err.message}`);
    }
  }

  // -- state: the route lives in the URL hash --------------------------------

  let me = { tenant: null, admin: true, open: true };
  const list = { rows: new Map(), cursor: null, filters: {}, generation: 0 };
  let detail = null; // { id, tenant } of the flow on screen

  function route() {
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    const m = path.match(/^\/flow\/(.+)$/);
    if (m) return { view: "detail", id: decodeURIComponent(m[1]), params };
    if (path === "/metrics") return { view: "metrics", params };
    return { view: "list", params };
  }

  function readFilters(params) {
    const f = {};
    for (const key of ["tenant", "status", "name", "labels", "range"]) {
      const v = (params.get(key) || "").trim();
      if (v) f[key] = v;
    }
    if (me.tenant) f.tenant = me.tenant;
    // Page size: not in the form, but a link may set it (1 to 500).
    const size = Number(params.get("limit"));
    f.limit = Number.isInteger(size) && size >= 1 && size <= 500 ? size : PAGE;
    return f;
  }

  function parseLabels(text) {
    const labels = {};
    for (const part of (text || "").split(",")) {
      const item = part.trim();
      if (!item) continue;
      const at = item.indexOf("=");
      if (at <= 0) throw new Error(`label filter "${item}": expected key=value`);
      labels[item.slice(0, at).trim()] = item.slice(at + 1).trim();
    }
    return labels;
  }

  function sinceOf(f) {
    return f.range ? new Date(Date.now() - Number(f.range) * 1000) : null;
  }

  function filterParams(f, extra) {
    const p = new URLSearchParams();
    if (f.tenant) p.set("tenant", f.tenant);
    if (f.name) p.set("name", f.name);
    const since = sinceOf(f);
    if (since) p.set("since", since.toISOString());
    for (const [k, v] of Object.entries(extra || {})) if (v !== undefined && v !== null) p.set(k, v);
    return p;
  }

  // Every filter of the list (status and labels too): the list, its stats,
  // its charts and its exports all ask for the same flows.
  function listParams(f, extra) {
    const labels = parseLabels(f.labels);
    return filterParams(f, {
      status: f.status,
      labels: Object.keys(labels).length ? JSON.stringify(labels) : null,
      ...(extra || {}),
    });
  }

  function matches(flow, f) {
    if (f.tenant && flow.tenant !== f.tenant) return false;
    if (f.name && flow.name !== f.name) return false;
    if (f.status === "stalled" ? !flow.stalled : f.status && flow.status !== f.status) return false;
    const since = sinceOf(f);
    if (since && (!flow.started_at || Date.parse(flow.started_at) < since.getTime())) return false;
    let labels = {};
    try {
      labels = parseLabels(f.labels);
    } catch (_) {
      return false;
    }
    for (const [k, v] of Object.entries(labels)) if ((flow.labels || {})[k] !== v) return false;
    return true;
  }

  // -- flow list -------------------------------------------------------------

  function flowHref(flow) {
    return `#/flow/${encodeURIComponent(flow.flow_id)}?tenant=${encodeURIComponent(flow.tenant)}`;
  }

  function flowRow(flow) {
    const status = statusOf(flow);
    let step;
    if (flow.status === "failed" && flow.error) {
      step = el("span", { class: "fail-step", title: `${flow.error.type}: ${flow.error.message}` },
        flow.error.step_name || "(flow)", el("span", { class: "err-msg", text: flow.error.message }));
    } else {
      step = el("span", { text: flow.current_step || "–" });
    }
    const row = el("tr", {
      class: `flow-row row-${status}`, "data-flow-id": flow.flow_id, "data-status": status,
      onclick: (ev) => {
        if (ev.target.closest("a")) return;
        location.hash = flowHref(flow);
      },
    },
    el("td", { class: "status" }, badge(status)),
    el("td", { class: "name" }, el("a", { href: flowHref(flow), text: flow.name })),
    el("td", { class: "tenant", text: flow.tenant }),
    el("td", { class: "step" }, step),
    el("td", { class: "duration", text: flow.duration_ms === null ? (flow.status === "running" ? "running" : "–") : fmtDuration(flow.duration_ms) }),
    el("td", { class: "labels" }, chips(flow.labels)),
    el("td", { class: "services", text: (flow.services || []).join(", ") }),
    el("td", { class: "started", title: fmtTime(flow.started_at), text: fmtAgo(flow.started_at) }));
    row._flow = flow;
    return row;
  }

  function rememberTenant(name) {
    const options = $("#tenant-options");
    if ([...options.children].some((o) => o.value === name)) return;
    if (options.children.length < 200) options.append(el("option", { value: name }));
  }

  function putRow(flow, { live = false } = {}) {
    const body = $("#flows tbody");
    rememberTenant(flow.tenant);
    const old = list.rows.get(flow.flow_id);
    if (old) {
      const row = flowRow(flow);
      if (live) row.classList.add("flash");
      old.replaceWith(row);
      list.rows.set(flow.flow_id, row);
      return true;
    }
    if (live) {
      if (!matches(flow, list.filters)) return false;
      // Newest first (flow ids sort by creation time): insert in place, unless
      // the flow is older than the loaded page and more pages exist.
      const after = [...body.children].find((r) => r.dataset.flowId < flow.flow_id);
      if (!after && list.cursor) return false;
      const row = flowRow(flow);
      row.classList.add("flash");
      body.insertBefore(row, after || null);
      list.rows.set(flow.flow_id, row);
      $("#empty").hidden = true;
      return true;
    }
    const row = flowRow(flow);
    body.append(row);
    list.rows.set(flow.flow_id, row);
    return true;
  }

  async function loadList({ append = false } = {}) {
    const generation = append ? list.generation : ++list.generation;
    const f = list.filters;
    let p;
    try {
      p = listParams(f, { limit: f.limit, cursor: append ? list.cursor : null });
    } catch (err) {
      notice(err.message);
      return;
    }
    let page;
    try {
      page = await api("/api/flows", p);
    } catch (err) {
      apiFailed(err);
      return;
    }
    if (generation !== list.generation) return; // filters changed meanwhile
    notice("");
    if (!append) {
      $("#flows tbody").replaceChildren();
      list.rows.clear();
    }
    for (const flow of page.flows) putRow(flow);
    list.cursor = page.next_cursor;
    $("#more").hidden = !list.cursor;
    $("#empty").hidden = list.rows.size > 0;
    $("#flows").dataset.loaded = String(list.generation);
    if (!append) {
      loadStats();
      loadCharts();
    }
  }

  // -- stats -----------------------------------------------------------------

  async function loadStats() {
    const f = list.filters;
    const generation = list.generation;
    let s;
    try {
      s = await api("/api/stats/overview", listParams(f));
    } catch (_) {
      return;
    }
    if (generation !== list.generation) return;
    const pct = s.success_rate === null ? "–" : `${(s.success_rate * 100).toFixed(1)} %`;
    const scope = [f.tenant || "all tenants", f.name || "all flows", f.status || "any status",
      f.labels || null, f.range ? rangeText(f.range) : "any time"].filter(Boolean).join(" · ");
    const card = (label, value, cls) =>
      el("div", { class: `card ${cls || ""}` }, el("div", { class: "value", text: value }), el("div", { class: "label", text: label }));
    const failures = (s.failures_by_step || []).slice(0, 6);
    const most = Math.max(1, ...failures.map((x) => x.failures));
    fill($("#stats"),
      el("div", { class: "stats-scope", text: scope }),
      el("div", { class: "cards" },
        card("runs", String(s.runs)),
        card("success rate", pct, "ok"),
        card("running", String(s.running), "run"),
        card("stalled", String(s.stalled), "stall"),
        card("failed", String(s.failed), "bad"),
        card("p50", fmtDuration(s.duration_p50_ms)),
        card("p95", fmtDuration(s.duration_p95_ms)),
        card("p99", fmtDuration(s.duration_p99_ms))),
      el("div", { class: "stats-panels" },
        histogram(s.histogram || []),
        failures.length
        ? el("div", { class: "failures" }, el("div", { class: "label", text: "failures per step" }),
          failures.map((x) => el("div", { class: "bar-row" },
            el("span", { class: "bar-name", text: x.step_name }),
            el("span", { class: "bar" }, barFill((100 * x.failures) / most)),
            el("span", { class: "bar-n", text: String(x.failures) }))))
          : null));
    $("#stats").dataset.runs = String(s.runs);
  }

  function rangeText(range) {
    const opt = [...$("#filters select[name=range]").options].find((o) => o.value === range);
    return opt ? opt.textContent : `last ${range} s`;
  }

  // Durations in 1-2-5 buckets: one column per bucket, height by count.
  function histogram(buckets) {
    if (!buckets.length) return null;
    const most = Math.max(1, ...buckets.map((b) => b.count));
    const edge = (ms) => (ms === null ? "∞" : fmtDuration(ms));
    return el("div", { class: "histogram", "aria-label": "duration histogram" },
      el("div", { class: "label", text: "duration of finished flows" }),
      el("div", { class: "hist-cols" }, buckets.map((b) => {
        const bar = el("span", { class: "hist-bar" });
        bar.style.height = `${(100 * b.count) / most}%`;
        return el("div", { class: "hist-col", title: `${edge(b.lo_ms)} – ${edge(b.hi_ms)}: ${b.count} flows`,
          "data-lo-ms": b.lo_ms, "data-count": b.count },
        el("span", { class: "hist-n", text: b.count ? String(b.count) : "" }),
        el("span", { class: "hist-track" }, bar),
        el("span", { class: "hist-edge", text: `≥${edge(b.lo_ms)}` }));
      })));
  }

  function barFill(percent) {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${percent}%`; // CSSOM, not a style attribute: the CSP forbids those
    return fill;
  }

  let statsTimer = null;
  function refreshStatsSoon() {
    if (statsTimer) return;
    // Soon enough that a page is current within 2 s of a change, coalescing
    // bursts; never a second round while one is still being answered.
    statsTimer = setTimeout(async () => {
      if (route().view === "list") await Promise.all([loadStats(), loadCharts()]);
      statsTimer = null;
    }, 700);
  }

  // -- charts (uPlot, served from /static/vendor) ----------------------------------

  const STATUS_COLORS = { success: "#2f9e44", running: "#1c7ed6", stalled: "#e8590c", failed: "#e03131" };
  const STACK = ["failed", "stalled", "running", "success"]; // bottom to top
  const charts = { runs: null, durations: null, data: null };

  function fmtAxisTime(sec, bucket, spansDays) {
    const d = new Date(sec * 1000);
    const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    if (bucket >= 86400) return day;
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    const clock = bucket < 60 ? `${hm}:${pad(d.getSeconds())}` : hm;
    return spansDays ? `${day} ${clock}` : clock;
  }

  function fmtBucket(sec) {
    if (sec % 86400 === 0) return `${sec / 86400} d`;
    if (sec % 3600 === 0) return `${sec / 3600} h`;
    if (sec % 60 === 0) return `${sec / 60} min`;
    return `${sec} s`;
  }

  async function loadCharts() {
    const generation = list.generation;
    let ts;
    try {
      ts = await api("/api/stats/timeseries", listParams(list.filters));
    } catch (_) {
      return;
    }
    if (generation !== list.generation) return;
    renderCharts(ts);
  }

  function renderCharts(ts) {
    charts.data = ts;
    const box = $("#charts");
    const points = ts.points || [];
    const total = points.reduce((n, p) => n + STACK.reduce((m, k) => m + p[k], 0), 0);
    box.dataset.bucket = String(ts.bucket_s);
    box.dataset.total = String(total);
    box.dataset.points = String(points.length);
    for (const k of STACK) box.dataset[k] = String(points.reduce((n, p) => n + p[k], 0));
    if (charts.runs) charts.runs.destroy();
    if (charts.durations) charts.durations.destroy();
    charts.runs = charts.durations = null;
    const zone = zoneOf(new Date());
    const runsBox = fill($("#chart-runs"),
      el("div", { class: "chart-title", text: `Runs started per ${fmtBucket(ts.bucket_s)}, by status (${zone})` }));
    const durBox = fill($("#chart-durations"),
      el("div", { class: "chart-title", text: `Duration p50 / p95 per ${fmtBucket(ts.bucket_s)} (${zone})` }));
    if (!points.length || typeof uPlot === "undefined") {
      runsBox.append(el("p", { class: "muted", text: "no runs in this range" }));
      return;
    }
    const xs = points.map((p) => Date.parse(p.t) / 1000);
    const spansDays = new Date(xs[0] * 1000).toDateString() !== new Date(xs[xs.length - 1] * 1000).toDateString();
    const width = Math.max(320, runsBox.clientWidth - 8);
    const xAxis = {
      stroke: "#6b7385",
      grid: { stroke: "#eef0f3" },
      values: (u, splits) => splits.map((v) => fmtAxisTime(v, ts.bucket_s, spansDays)),
    };
    const xSeries = { value: (u, v) => (v === null || v === undefined ? "–" : fmtTime(new Date(v * 1000).toISOString())) };

    // Stacked bars: each series is the running total up to its status, drawn
    // top-down so each smaller total paints over the one above it.
    const cumulative = {};
    let acc = points.map(() => 0);
    for (const k of STACK) {
      acc = acc.map((v, i) => v + points[i][k]);
      cumulative[k] = acc;
    }
    const drawOrder = [...STACK].reverse();
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.85, 60] }) : undefined;
    charts.runs = new uPlot({
      width, height: 190,
      legend: { live: true },
      cursor: { points: { show: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [xAxis, { stroke: "#6b7385", grid: { stroke: "#eef0f3" }, size: 40, values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) }],
      series: [
        xSeries,
        ...drawOrder.map((k) => ({
          label: k,
          stroke: STATUS_COLORS[k],
          fill: STATUS_COLORS[k],
          width: 0,
          paths: bars,
          points: { show: false },
          value: (u, v, si, i) => (i === null || i === undefined ? "–" : String(points[i][k])),
        })),
      ],
    }, [xs, ...drawOrder.map((k) => cumulative[k])], runsBox);

    const hasDurations = points.some((p) => p.p50_ms !== null);
    if (!hasDurations) {
      durBox.append(el("p", { class: "muted", text: "no finished runs in this range" }));
      return;
    }
    const dur = (v) => (v === null || v === undefined ? "–" : fmtDuration(v));
    charts.durations = new uPlot({
      width, height: 190,
      cursor: { points: { size: 6 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [xAxis, { stroke: "#6b7385", grid: { stroke: "#eef0f3" }, size: 64, values: (u, splits) => splits.map(dur) }],
      series: [
        xSeries,
        { label: "p50", stroke: "#1c7ed6", width: 2, spanGaps: true, value: (u, v) => dur(v), points: { size: 4 } },
        { label: "p95", stroke: "#ae3ec9", width: 2, spanGaps: true, value: (u, v) => dur(v), points: { size: 4 } },
      ],
    }, [xs, points.map((p) => p.p50_ms), points.map((p) => p.p95_ms)], durBox);
  }

  // -- export ------------------------------------------------------------------------

  // Fetched (so a token travels as a header, never in a URL), then saved.
  async function download(path, params, fallbackName) {
    const query = params && [...params].length ? `?${params}` : "";
    let resp;
    try {
      resp = await fetch(path + query, { headers: authHeaders(), cache: "no-store" });
    } catch (err) {
      notice(`Export failed: ${err.message}`);
      return;
    }
    if (!resp.ok) {
      let detail = resp.statusText;
      try {
        detail = (await resp.json()).detail || detail;
      } catch (_) { /* not JSON */ }
      notice(`Export failed: ${detail}`);
      return;
    }
    const disposition = resp.headers.get("Content-Disposition") || "";
    const m = disposition.match(/filename="([^"]+)"/);
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: m ? m[1] : fallbackName });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function exportList(format) {
    let p;
    try {
      p = listParams(list.filters, { format });
    } catch (err) {
      notice(err.message);
      return;
    }
    download("/api/flows", p, `flows.${format}`);
  }

  // -- flow detail -------------------------------------------------------------

  function errorBlock(error, title, cls) {
    return el("div", { class: `error ${cls || ""}` },
      el("div", { class: "error-head" },
        title ? el("span", { class: "error-where", text: title }) : null,
        el("span", { class: "error-type", text: error.type }),
        el("span", { class: "error-message", text: error.message })),
      error.stack
        ? el("details", { class: "stack" }, el("summary", { text: "stack trace" }), el("pre", { text: error.stack }))
        : null);
  }

  function stepNode(step) {
    return el("li", { class: `step step-${step.status}`, "data-step": step.name },
      el("div", { class: "step-head" },
        badge(step.status),
        el("span", { class: "step-name", text: step.name }),
        el("span", { class: "step-dur", text: step.duration_ms === null ? (step.status === "running" ? "running" : "–") : fmtDuration(step.duration_ms) }),
        step.services.length ? el("span", { class: "step-svc", text: step.services.join(", ") }) : null,
        el("span", { class: "step-time", text: fmtTime(step.started_at) })),
      chips(step.attributes, "chip attr"),
      step.error ? errorBlock(step.error, step.status === "retried" ? "attempt retried" : null,
        step.status === "retried" ? "retried" : null) : null,
      step.children.length ? el("ul", { class: "steps" }, step.children.map(stepNode)) : null);
  }

  function renderDetail(flow) {
    const status = statusOf(flow);
    const meta = [
      ["Tenant", flow.tenant],
      ["Flow id", flow.flow_id],
      ["Started", fmtTime(flow.started_at)],
      ["Ended", fmtTime(flow.ended_at)],
      ["Duration", flow.duration_ms === null ? "running" : fmtDuration(flow.duration_ms)],
      ["Last activity", fmtTime(flow.last_activity)],
      ["Current step", flow.current_step || "–"],
      ["Steps", `${flow.steps_started} started · ${flow.steps_ended} ended · ${flow.steps_failed} failed`],
      ["Services", (flow.services || []).join(", ") || "–"],
      ["Trace id", flow.trace_id || "–"],
    ];
    fill($("#detail-view"),
      el("div", { class: "detail-bar" },
        el("a", { class: "back", href: backHref, text: "← all flows" }),
        el("button", { type: "button", id: "export-flow", class: "export", text: "Download JSON",
          title: "This flow with its steps, errors and every event",
          onclick: () => {
            const p = new URLSearchParams({ format: "json" });
            if (flow.tenant && !me.tenant) p.set("tenant", flow.tenant);
            download(`/api/flows/${encodeURIComponent(flow.flow_id)}`, p, `flow-${flow.flow_id}.json`);
          } })),
      el("h1", { class: "detail-title" }, badge(status), el("span", { class: "flow-name", text: flow.name })),
      el("dl", { class: "meta" }, meta.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("h2", { text: "Labels" }),
      chips(flow.labels) || el("p", { class: "muted", text: "no labels" }),
      flow.error && flow.status === "failed"
        ? [el("h2", { text: "Error" }), errorBlock(flow.error, flow.error.step_name ? `in step ${flow.error.step_name}` : "flow")]
        : null,
      el("h2", { text: "Timeline" }),
      timeline(flow),
      el("h2", { text: "Steps" }),
      flow.steps.length ? el("ul", { class: "steps tree" }, flow.steps.map(stepNode)) : el("p", { class: "muted", text: "no steps yet" }),
      el("h2", { text: "Events" }),
      flow.events.length
        ? el("table", { class: "events" },
          el("thead", {}, el("tr", {}, ["Time", "Event", "Step", "Attributes", "Service"].map((h) => el("th", { text: h })))),
          el("tbody", {}, flow.events.map((e) => el("tr", {},
            el("td", { text: fmtTime(e.timestamp) }),
            el("td", { class: "event-name", text: e.name }),
            el("td", { text: stepName(flow, e.step_id) }),
            el("td", {}, chips(e.attributes, "chip attr")),
            el("td", { text: e.service })))))
        : el("p", { class: "muted", text: "no custom events" }),
      flow.status === "failed" && flow.errors.length > 1
        ? [el("h2", { text: `All errors (${flow.errors.length})` }),
          flow.errors.map((e) => errorBlock(e, e.step_name ? `step ${e.step_name}` : "flow"))]
        : null,
      // Not failed, yet errors: attempts that raised and were retried (or a
      // step error the flow recovered from). Shown, but not as a failure.
      flow.status !== "failed" && flow.errors.length
        ? [el("h2", { text: `Errors the flow recovered from (${flow.errors.length})` }),
          flow.errors.map((e) => errorBlock(e, e.step_name ? `step ${e.step_name}` : "flow", "retried"))]
        : null);
  }

  // -- timeline (waterfall) ------------------------------------------------------

  const SERVICE_COLORS = ["#4c6ef5", "#12b886", "#f59f00", "#ae3ec9", "#15aabf", "#e64980", "#82c91e", "#fd7e14"];

  // Length of the parts of [start, end] no child interval covers (microseconds).
  function uncovered(start, end, intervals) {
    const parts = intervals
      .map(([a, b]) => [Math.max(a, start), Math.min(b, end)])
      .filter(([a, b]) => b > a)
      .sort((x, y) => x[0] - y[0]);
    let covered = 0;
    let at = start;
    for (const [a, b] of parts) {
      if (b <= at) continue;
      covered += b - Math.max(a, at);
      at = b;
    }
    return { gap: Math.max(0, end - start - covered), parts };
  }

  function niceStep(spanMs) {
    for (const base of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000,
      120000, 300000, 600000, 1800000, 3600000, 7200000, 21600000, 43200000, 86400000]) {
      if (spanMs / base <= 6) return base;
    }
    return 86400000;
  }

  function timeline(flow) {
    const nowUs = Date.now() * 1000;
    const lastUs = usOf(flow.last_activity) || nowUs;
    const live = (x) => (x.status === "running" ? Math.max(nowUs, lastUs) : lastUs);
    const nodes = []; // depth-first, with depth
    const walk = (steps, depth) => {
      for (const st of steps) {
        nodes.push({ step: st, depth });
        walk(st.children || [], depth + 1);
      }
    };
    walk(flow.steps, 1);
    const startOf = (x) => usOf(x.started_at);
    const endOf = (x) => usOf(x.ended_at) || live(x);
    const starts = nodes.map((n) => startOf(n.step)).filter((v) => v !== null);
    const t0 = startOf(flow) ?? (starts.length ? Math.min(...starts) : lastUs);
    const ends = nodes.map((n) => endOf(n.step));
    const t1 = Math.max(endOf(flow), ...ends, t0 + 1);
    const span = t1 - t0;
    const pct = (us) => `${Math.min(100, Math.max(0, (100 * us) / span)).toFixed(3)}%`;

    const services = [];
    const colorOf = (svc) => {
      if (!svc) return "#868e96";
      if (!services.includes(svc)) services.push(svc);
      return SERVICE_COLORS[services.indexOf(svc) % SERVICE_COLORS.length];
    };

    const row = (x, depth, name, service, status, children, kind) => {
      const start = startOf(x) ?? t0;
      const end = Math.max(start, endOf(x));
      const open = !x.ended_at;
      const durMs = (end - start) / 1000;
      const kids = children.map((c) => [startOf(c) ?? start, endOf(c)]);
      const { gap, parts } = uncovered(start, end, kids);
      const gapMs = gap / 1000;
      const color = kind === "flow" ? "#495057" : colorOf(service);
      const bar = el("div", {
        class: `tl-bar tl-${status}${open ? " tl-open" : ""}${children.length ? " tl-parent" : ""}`,
        title: `${name} · ${service || "–"} · ${status}\nstarted ${fmtTime(x.started_at)} (+${fmtSpan((start - t0) / 1000)})\n` +
          `${open ? "running for" : "took"} ${fmtSpan(durMs)}` +
          (children.length ? `\n${fmtSpan(gapMs)} not in child steps` : ""),
      });
      bar.style.left = pct(start - t0);
      bar.style.width = pct(end - start);
      bar.style.setProperty("--svc", color);
      // Inside a parent: solid where child steps ran, hatched where none did.
      for (const [a, b] of parts) {
        const seg = el("span", { class: "tl-covered" });
        seg.style.left = `${((100 * (a - start)) / Math.max(1, end - start)).toFixed(3)}%`;
        seg.style.width = `${((100 * (b - a)) / Math.max(1, end - start)).toFixed(3)}%`;
        bar.append(seg);
      }
      const label = el("div", { class: "tl-label" },
        el("span", { class: "tl-swatch" }),
        el("span", { class: "tl-name", text: name }));
      label.style.paddingLeft = `${depth * 16}px`;
      label.firstChild.style.background = color;
      const gapText = children.length && gapMs >= 1
        ? el("span", { class: "tl-gap", text: `${fmtSpan(gapMs)} not in ${kind === "flow" ? "steps" : "child steps"}` })
        : null;
      return el("div", {
        class: `tl-row tl-depth-${Math.min(depth, 6)}`, "data-step": name, "data-kind": kind, "data-status": status,
        "data-depth": depth, "data-offset-ms": ((start - t0) / 1000).toFixed(3), "data-duration-ms": durMs.toFixed(3),
        "data-gap-ms": children.length ? gapMs.toFixed(3) : null, "data-service": service || "",
      },
      label,
      el("div", { class: "tl-track" }, bar),
      el("div", { class: "tl-info" },
        el("span", { class: "tl-offset", text: `+${fmtSpan((start - t0) / 1000)}` }),
        el("span", { class: "tl-dur", text: open ? `${fmtSpan(durMs)} …` : fmtSpan(durMs) }),
        badge(status),
        el("span", { class: "tl-svc", text: service || "" }),
        gapText));
    };

    const flowStatus = statusOf(flow);
    const rows = [row(flow, 0, flow.name, (flow.services || []).join(", "), flowStatus, flow.steps, "flow")];
    for (const { step, depth } of nodes) {
      rows.push(row(step, depth, step.name, (step.services || [])[0] || "", step.status, step.children || [], "step"));
    }

    // Axis: round offsets from the flow's start.
    const stepMs = niceStep(span / 1000);
    const ticks = [];
    for (let ms = 0; ms * 1000 <= span; ms += stepMs) {
      const tick = el("span", { class: "tl-tick", text: `+${ms < 1000 ? `${ms} ms` : fmtDuration(ms)}` });
      tick.style.left = pct(ms * 1000);
      ticks.push(tick);
    }
    return el("div", { class: "timeline", "data-span-ms": (span / 1000).toFixed(3) },
      el("div", { class: "tl-head" },
        el("div", { class: "tl-label muted", text: `from ${fmtTime(flow.started_at)}` }),
        el("div", { class: "tl-axis" }, ticks),
        el("div", { class: "tl-info muted", text: "offset · duration · status · service" })),
      rows,
      el("div", { class: "tl-legend" },
        services.map((svc) => {
          const sw = el("span", { class: "tl-swatch" });
          sw.style.background = colorOf(svc);
          return el("span", { class: "tl-legend-item" }, sw, svc);
        }),
        el("span", { class: "tl-legend-item" }, el("span", { class: "tl-swatch tl-hatch" }), "time not in child steps"),
        el("span", { class: "tl-legend-item" }, el("span", { class: "tl-swatch tl-retried-key" }), "retried attempt")));
  }

  function stepName(flow, stepId) {
    if (!stepId) return "–";
    const walk = (steps) => {
      for (const s of steps) {
        if (s.step_id === stepId) return s.name;
        const found = walk(s.children);
        if (found) return found;
      }
      return null;
    };
    return walk(flow.steps) || stepId;
  }

  let backHref = "#/";

  async function loadDetail(id, tenant) {
    detail = { id, tenant };
    const p = new URLSearchParams();
    if (tenant && !me.tenant) p.set("tenant", tenant);
    let flow;
    try {
      flow = await api(`/api/flows/${encodeURIComponent(id)}`, p);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        shownDetail = null;
        fill($("#detail-view"), el("a", { class: "back", href: backHref, text: "← all flows" }),
          el("p", { class: "empty", text: `No flow ${id} (or not visible with this token).` }));
        return;
      }
      apiFailed(err);
      return;
    }
    if (!detail || detail.id !== id) return;
    notice("");
    // Re-render only what changed: a reload after (re)connecting must not
    // close an open stack trace or move the page under the reader.
    const text = JSON.stringify(flow);
    if (shownDetail === text && $("#detail-view").dataset.flowId === id) return;
    shownDetail = text;
    renderDetail(flow);
    $("#detail-view").dataset.flowId = id;
  }

  let shownDetail = null;

  // -- live stream (fetch-based server-sent events, so the token stays in a header) --

  const stream = { ctrl: null, key: null, retry: 0, connectedOnce: false };

  function setLive(state, text) {
    const node = $("#live");
    node.dataset.state = state;
    node.textContent = text;
  }

  // The tenant the stream is narrowed to: the list's filter, or the flow on screen.
  function streamTenant() {
    if (me.tenant) return "";
    const r = route();
    if (r.view === "detail") return r.params.get("tenant") || "";
    return list.filters.tenant || "";
  }

  function streamKey() {
    return `${token()}|${streamTenant()}`;
  }

  function connectStream(force = false) {
    const key = streamKey();
    if (!force && stream.ctrl && stream.key === key) return;
    if (stream.key !== key) stream.connectedOnce = false;
    if (stream.ctrl) stream.ctrl.abort();
    const ctrl = new AbortController();
    stream.ctrl = ctrl;
    stream.key = key;
    runStream(ctrl).catch(() => {}).finally(() => {
      if (stream.ctrl !== ctrl || ctrl.signal.aborted) return;
      setLive("off", "reconnecting…");
      const delay = Math.min(30000, 500 * 2 ** stream.retry++);
      setTimeout(() => {
        if (stream.ctrl === ctrl) connectStream(true);
      }, delay);
    });
  }

  async function runStream(ctrl) {
    const p = new URLSearchParams();
    const tenant = streamTenant();
    if (tenant) p.set("tenant", tenant);
    const query = [...p].length ? `?${p}` : "";
    const resp = await fetch(`/api/stream${query}`, { headers: authHeaders(), signal: ctrl.signal, cache: "no-store" });
    if (!resp.ok) {
      setLive("off", resp.status === 401 || resp.status === 403 ? "no access" : "offline");
      if (resp.status === 401 || resp.status === 403) stream.retry = 6; // slow retries until the token changes
      throw new Error(`stream: HTTP ${resp.status}`);
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (;;) {
        const m = buffer.match(/\r\n\r\n|\n\n|\r\r/);
        if (!m) break;
        const block = buffer.slice(0, m.index);
        buffer = buffer.slice(m.index + m[0].length);
        onStreamBlock(block);
      }
    }
  }

  function onStreamBlock(block) {
    let event = "message";
    const data = [];
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const field = at < 0 ? line : line.slice(0, at);
      let value = at < 0 ? "" : line.slice(at + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    let payload = {};
    try {
      payload = data.length ? JSON.parse(data.join("\n")) : {};
    } catch (_) {
      return;
    }
    if (event === "hello") {
      stream.retry = 0;
      setLive("on", "live");
      // Anything that changed before this stream started (or while it was
      // down) is not going to be pushed: reload what is on screen once.
      refresh();
      stream.connectedOnce = true;
    } else if (event === "flows") {
      onLiveFlows(payload.flows || []);
    } else if (event === "resync") {
      refresh();
    }
  }

  function onLiveFlows(flows) {
    const r = route();
    let touched = false;
    let mine = false;
    for (const flow of flows) {
      if (me.tenant && flow.tenant !== me.tenant) continue; // the server scopes; belt and braces
      if (putRow(flow, { live: true })) touched = true;
      if (r.view === "detail" && detail && detail.id === flow.flow_id) mine = true;
    }
    if (mine) loadDetail(detail.id, detail.tenant);
    if (touched) refreshStatsSoon();
  }

  // -- wiring -------------------------------------------------------------------

  function fillFilterForm(f) {
    const form = $("#filters");
    for (const key of ["tenant", "status", "name", "labels", "range"]) form.elements[key].value = f[key] || "";
    form.elements.tenant.disabled = Boolean(me.tenant);
  }

  function render() {
    const r = route();
    $("#list-view").hidden = r.view !== "list";
    $("#detail-view").hidden = r.view !== "detail";
    $("#metrics-view").hidden = r.view !== "metrics";
    if (r.view === "metrics") {
      if (window.DashFrogMetrics) window.DashFrogMetrics.show(r.params, me.tenant);
      return;
    }
    if (r.view === "detail") {
      loadDetail(r.id, r.params.get("tenant"));
      connectStream(); // a detail page opened from a link is live too
      return;
    }
    detail = null;
    list.filters = readFilters(r.params);
    backHref = location.hash || "#/";
    fillFilterForm(list.filters);
    loadList();
    connectStream();
  }

  function refresh() {
    const r = route();
    if (r.view === "detail" && detail) loadDetail(detail.id, detail.tenant);
    else loadList();
  }

  async function whoAmI() {
    try {
      me = await api("/api/whoami");
      const who = $("#who");
      who.textContent = me.tenant ? `tenant ${me.tenant}` : me.open && !token() ? "open API" : "admin";
      who.dataset.tenant = me.tenant || "";
      return true;
    } catch (err) {
      me = { tenant: null, admin: false, open: false };
      $("#who").textContent = "";
      apiFailed(err);
      return false;
    }
  }

  async function start() {
    const ok = await whoAmI();
    stream.connectedOnce = false;
    if (stream.ctrl) {
      stream.ctrl.abort();
      stream.ctrl = null;
    }
    if (!ok) {
      setLive("off", "offline");
      $("#flows tbody").replaceChildren();
      list.rows.clear();
      fill($("#stats"));
      return;
    }
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const form = ev.target;
      const p = new URLSearchParams();
      for (const key of ["tenant", "status", "name", "labels", "range"]) {
        const v = (form.elements[key].value || "").trim();
        if (v && !(key === "tenant" && me.tenant)) p.set(key, v);
      }
      if (list.filters.limit !== PAGE) p.set("limit", String(list.filters.limit));
      const target = `#/${[...p].length ? `?${p}` : ""}`;
      if (location.hash === target) render();
      else location.hash = target;
    });
    $("#filters-clear").addEventListener("click", () => {
      location.hash = "#/";
    });
    $("#more").addEventListener("click", () => loadList({ append: true }));
    for (const button of document.querySelectorAll("[data-export]")) {
      button.addEventListener("click", () => exportList(button.dataset.export));
    }
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (charts.data && route().view === "list") renderCharts(charts.data);
      }, 200);
    });
    $("#token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("#token").value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      $("#token").value = "";
      start();
    });
    $("#token-clear").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      start();
    });
    window.addEventListener("hashchange", render);
    // Time passes without events: start times age, and a running flow that
    // stays quiet past the threshold becomes stalled (nothing announces that).
    setInterval(() => {
      // A running flow on screen turns stalled without an event: ask again
      // (re-rendered only if the answer differs).
      if (route().view === "detail" && detail && shownDetail && JSON.parse(shownDetail).status === "running") {
        loadDetail(detail.id, detail.tenant);
      }
      for (const row of [...list.rows.values()]) {
        const flow = row._flow;
        if (!flow) continue;
        const quiet = Date.now() - Date.parse(flow.last_activity);
        if (flow.status === "running" && !flow.stalled && me.stalled_after_s && quiet > me.stalled_after_s * 1000) {
          putRow({ ...flow, stalled: true });
          continue;
        }
        const cell = row.querySelector(".started");
        if (cell) cell.textContent = fmtAgo(flow.started_at);
      }
    }, 15000);
    start();
  });
})();
