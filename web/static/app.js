// DashFrog web UI: flow list, flow detail and stats over the JSON API, kept
// live by the /api/stream server-sent events. Everything that comes from the
// API is untrusted (labels and attributes come from application code): it is
// only ever put in the page with textContent or setAttribute, never as markup.
"use strict";

(() => {
  const TOKEN_KEY = "dashfrog.token";
  const PAGE = 50;

  // -- small DOM helpers ---------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

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
    return new Date(iso).toLocaleDateString();
  }

  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

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

  // -- API access ----------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function authHeaders() {
    const t = token();
    return t ? { Authorization: `Bearer ${t}` } : {};
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, params) {
    const query = params && [...params].length ? `?${params}` : "";
    const resp = await fetch(path + query, { headers: authHeaders(), cache: "no-store" });
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : resp.statusText;
      throw new ApiError(resp.status, detail);
    }
    return body;
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
    let labels;
    try {
      labels = parseLabels(f.labels);
    } catch (err) {
      notice(err.message);
      return;
    }
    const p = filterParams(f, {
      status: f.status,
      limit: f.limit,
      cursor: append ? list.cursor : null,
      labels: Object.keys(labels).length ? JSON.stringify(labels) : null,
    });
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
    if (!append) loadStats();
  }

  // -- stats -----------------------------------------------------------------

  async function loadStats() {
    const f = list.filters;
    let s;
    try {
      s = await api("/api/stats", filterParams(f));
    } catch (_) {
      return;
    }
    const pct = s.success_rate === null ? "–" : `${(s.success_rate * 100).toFixed(1)} %`;
    const scope = [f.tenant || "all tenants", f.name || "all flows"].join(" · ");
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
      failures.length
        ? el("div", { class: "failures" }, el("div", { class: "label", text: "failures per step" }),
          failures.map((x) => el("div", { class: "bar-row" },
            el("span", { class: "bar-name", text: x.step_name }),
            el("span", { class: "bar" }, barFill((100 * x.failures) / most)),
            el("span", { class: "bar-n", text: String(x.failures) }))))
        : null);
  }

  function barFill(percent) {
    const fill = el("span", { class: "fill" });
    fill.style.width = `${percent}%`; // CSSOM, not a style attribute: the CSP forbids those
    return fill;
  }

  let statsTimer = null;
  function refreshStatsSoon() {
    if (statsTimer) return;
    statsTimer = setTimeout(() => {
      statsTimer = null;
      if (route().view === "list") loadStats();
    }, 3000);
  }

  // -- flow detail -------------------------------------------------------------

  function errorBlock(error, title) {
    return el("div", { class: "error" },
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
      step.error ? errorBlock(step.error) : null,
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
      el("a", { class: "back", href: backHref, text: "← all flows" }),
      el("h1", { class: "detail-title" }, badge(status), el("span", { class: "flow-name", text: flow.name })),
      el("dl", { class: "meta" }, meta.map(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("h2", { text: "Labels" }),
      chips(flow.labels) || el("p", { class: "muted", text: "no labels" }),
      flow.error ? [el("h2", { text: "Error" }), errorBlock(flow.error, flow.error.step_name ? `in step ${flow.error.step_name}` : "flow")] : null,
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
      flow.errors.length > 1
        ? [el("h2", { text: `All errors (${flow.errors.length})` }),
          flow.errors.map((e) => errorBlock(e, e.step_name ? `step ${e.step_name}` : "flow"))]
        : null);
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
        fill($("#detail-view"), el("a", { class: "back", href: backHref, text: "← all flows" }),
          el("p", { class: "empty", text: `No flow ${id} (or not visible with this token).` }));
        return;
      }
      apiFailed(err);
      return;
    }
    if (!detail || detail.id !== id) return;
    notice("");
    renderDetail(flow);
  }

  // -- live stream (fetch-based server-sent events, so the token stays in a header) --

  const stream = { ctrl: null, key: null, retry: 0, connectedOnce: false };

  function setLive(state, text) {
    const node = $("#live");
    node.dataset.state = state;
    node.textContent = text;
  }

  function streamKey() {
    return `${token()}|${me.tenant ? "" : list.filters.tenant || ""}`;
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
    if (!me.tenant && list.filters.tenant) p.set("tenant", list.filters.tenant);
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
    for (const flow of flows) {
      if (me.tenant && flow.tenant !== me.tenant) continue; // the server scopes; belt and braces
      if (putRow(flow, { live: true })) touched = true;
      if (r.view === "detail" && detail && detail.id === flow.flow_id) loadDetail(detail.id, detail.tenant);
    }
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
    if (r.view === "detail") {
      loadDetail(r.id, r.params.get("tenant"));
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
