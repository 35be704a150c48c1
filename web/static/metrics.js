// DashFrog web UI, Metrics view (#/metrics): one time-series chart per declared
// metric over GET /api/metrics and /api/metrics/{name}. app.js routes here and
// calls DashFrogMetrics.show(params); the token is the one app.js keeps.
// Values from the API are only ever put in the page as text.
"use strict";

(() => {
  const { $, el, api } = window.DashFrogCommon;
  const RANGES = [[900, "last 15 min", "1m"], [3600, "last hour", "1m"], [21600, "last 6 hours", "5m"],
    [86400, "last 24 hours", "15m"], [604800, "last 7 days", "2h"]];
  const COLORS = ["#1c7ed6", "#ae3ec9", "#e8590c", "#2b8a3e", "#c92a2a", "#5f3dc4"];
  const charts = [];
  let generation = 0;

  function fmtNumber(v) {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e6)) return v.toExponential(2);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
  }

  // What each kind draws: [field, label] per line.
  const LINES = {
    counter: [["rate", "rate /s"]],
    histogram: [["p50", "p50"], ["p95", "p95"], ["p99", "p99"]],
    gauge: [["last", "last"], ["min", "min"], ["max", "max"]],
  };

  function summary(kind, rows, unit) {
    const u = unit ? ` ${unit}` : "";
    if (!rows.length) return "no points in this range";
    if (kind === "counter") return `total ${fmtNumber(rows.reduce((n, r) => n + (r.total || 0), 0))}${u}`;
    const last = rows[rows.length - 1];
    if (kind === "histogram") {
      const count = rows.reduce((n, r) => n + (r.count || 0), 0);
      return `${count} values · latest p50 ${fmtNumber(last.p50)}${u} · p99 ${fmtNumber(last.p99)}${u}`;
    }
    return `last ${fmtNumber(last.last)}${u}`;
  }

  function chart(box, kind, rows) {
    if (!rows.length || typeof uPlot === "undefined") return;
    const xs = rows.map((r) => Date.parse(r.time) / 1000);
    const lines = LINES[kind];
    const plot = new uPlot({
      width: Math.max(320, box.clientWidth - 8),
      height: 170,
      cursor: { points: { size: 6 } },
      scales: { x: { time: true } },
      axes: [
        { stroke: "#6b7385", grid: { stroke: "#eef0f3" } },
        { stroke: "#6b7385", grid: { stroke: "#eef0f3" }, size: 60, values: (u, splits) => splits.map(fmtNumber) },
      ],
      series: [
        {},
        ...lines.map(([, label], i) => ({
          label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: false, points: { size: 4 },
          value: (u, v) => fmtNumber(v),
        })),
      ],
    }, [xs, ...lines.map(([field]) => rows.map((r) => (r[field] === undefined ? null : r[field])))], box);
    charts.push(plot);
  }

  async function card(info, filters, gen) {
    const params = new URLSearchParams({ since: filters.since, step: filters.step });
    if (filters.tenant) params.set("tenant", filters.tenant);
    const title = el("div", { class: "chart-title", text: `${info.pretty_name}${info.unit ? ` (${info.unit})` : ""}` });
    const meta = el("div", { class: "metric-meta muted", text: `${info.name} · ${info.kind}${info.labels.length ? ` · labels ${info.labels.join(", ")}` : ""}` });
    const value = el("div", { class: "metric-value", text: "…" });
    const box = el("div", { class: "chart metric-card", "data-metric": info.name, "data-kind": info.kind }, title, meta, value);
    $("#metrics-cards").append(box);
    try {
      const series = await api(`/api/metrics/${encodeURIComponent(info.name)}`, params);
      if (gen !== generation) return;
      box.dataset.rows = String(series.rows.length);
      value.textContent = summary(info.kind, series.rows, info.unit);
      if (series.error_bound !== null && series.error_bound !== undefined) {
        meta.textContent += ` · percentiles ±${(series.error_bound * 100).toFixed(1)}%`;
      }
      chart(box, info.kind, series.rows);
    } catch (err) {
      value.textContent = `could not load: ${err.message}`;
    }
  }

  function readForm() {
    const form = $("#metrics-filters");
    const range = Number(form.elements.range.value) || 3600;
    const preset = RANGES.find(([s]) => s === range) || RANGES[1];
    return {
      tenant: (form.elements.tenant.value || "").trim(),
      since: new Date(Date.now() - range * 1000).toISOString(),
      step: preset[2],
    };
  }

  async function load() {
    const gen = ++generation;
    while (charts.length) charts.pop().destroy();
    const cards = $("#metrics-cards");
    cards.replaceChildren();
    const filters = readForm();
    const status = $("#metrics-status");
    let listed;
    try {
      const params = new URLSearchParams();
      if (filters.tenant) params.set("tenant", filters.tenant);
      listed = await api("/api/metrics", params);
    } catch (err) {
      status.textContent = `Metrics could not be loaded: ${err.message}`;
      return;
    }
    if (gen !== generation) return;
    status.textContent = listed.metrics.length
      ? `${listed.metrics.length} metrics`
      : "No metrics yet: record some with dashfrog.metrics (Counter, Histogram, Gauge).";
    await Promise.all(listed.metrics.map((info) => card(info, filters, gen)));
  }

  function build(view) {
    const form = el("form", { id: "metrics-filters", class: "filters" },
      el("label", {}, "Tenant ", el("input", { name: "tenant", placeholder: "every tenant" })),
      el("label", {}, "Range ",
        el("select", { name: "range" }, RANGES.map(([s, label]) => el("option", { value: s, text: label })))),
      el("div", { class: "buttons" }, el("button", { type: "submit", class: "primary", text: "Apply" })));
    form.elements.range.value = "3600";
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      load();
    });
    view.replaceChildren(
      el("h2", { class: "metrics-heading", text: "Metrics" }),
      form,
      el("p", { id: "metrics-status", class: "muted" }),
      el("section", { id: "metrics-cards", class: "charts", "aria-label": "Metric charts" }));
  }

  window.DashFrogMetrics = {
    // Shown by app.js for #/metrics; ``tenant`` pre-fills (a tenant token's own).
    show(params, tenant) {
      const view = $("#metrics-view");
      if (!$("#metrics-filters", view)) build(view);
      const wanted = tenant || (params && params.get("tenant")) || "";
      const input = $("#metrics-filters").elements.tenant;
      if (wanted) input.value = wanted;
      input.readOnly = Boolean(tenant);
      load();
    },
  };
})();
