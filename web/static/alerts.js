// Open alert incidents (GET /api/alerts): a badge in the header and a list under it.
// Separate from app.js; it reads the same session token. Data only ever becomes text.
(() => {
  "use strict";
  const TOKEN_KEY = "dashfrog.token";
  const POLL_MS = 2000;

  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };

  const badge = el("button", { id: "alerts-badge", class: "alerts-badge", type: "button", hidden: "" });
  const panel = el("section", { id: "alerts-panel", class: "alerts-panel", "aria-label": "Open alerts", hidden: "" });

  const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC") : "");

  function render(body) {
    const open = (body && body.incidents) || [];
    badge.hidden = open.length === 0;
    badge.textContent = open.length === 1 ? "1 open alert" : `${open.length} open alerts`;
    if (open.length === 0) panel.hidden = true;
    const rows = open.map((i) =>
      el("li", { class: "alert-item", "data-rule": i.rule },
        el("span", { class: "alert-rule", text: i.rule }),
        el("span", { class: "alert-tenant", text: i.tenant }),
        el("span", { class: "alert-subject", text: i.subject }),
        el("span", { class: "alert-desc", text: i.description || (i.details && i.details.description) || i.condition }),
        el("span", { class: "alert-since", text: `since ${when(i.opened_at)}` })));
    panel.replaceChildren(el("h2", { text: "Open alerts" }), el("ul", { class: "alert-list" }, ...rows));
  }

  async function poll() {
    const token = sessionStorage.getItem(TOKEN_KEY) || "";
    try {
      const resp = await fetch("/api/alerts", {
        headers: token ? { Authorization: `Bearer ${token}`, Accept: "application/json" } : { Accept: "application/json" },
        cache: "no-store",
      });
      if (resp.ok) render(await resp.json());
      else render(null);
    } catch (_) {
      // offline: keep what is shown; app.js reports the connection state
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const header = document.querySelector("header.top");
    const main = document.querySelector("main");
    if (!header || !main) return;
    header.insertBefore(badge, document.getElementById("who"));
    main.prepend(panel);
    badge.addEventListener("click", () => { panel.hidden = !panel.hidden; });
    poll();
    setInterval(poll, POLL_MS);
  });
})();
