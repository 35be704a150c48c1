// Helpers shared by app.js and metrics.js (index.html loads this first): DOM
// building that puts values only ever in the page as text or attributes, and
// the JSON API call that carries the session token.
"use strict";

window.DashFrogCommon = (() => {
  const TOKEN_KEY = "dashfrog.token";

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

  // GET path?params as JSON; a failure throws ApiError with the API's detail.
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

  return { TOKEN_KEY, $, el, token, authHeaders, ApiError, api };
})();
