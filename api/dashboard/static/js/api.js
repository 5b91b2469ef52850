// The HTTP API, relative to the page: works at / and behind a path prefix alike.
"use strict";

export const API_BASE = new URL(".", window.location.href.split("#")[0]);

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `the API answered ${status}`);
    this.status = status;
    this.detail = detail; // a string, or FastAPI's list of {loc, msg, type} for a 422
  }
}

// Who the page acts for (GET auth/session). A signed-in page holds an HttpOnly session cookie it
// cannot read; the CSRF token it can read must go with every request that changes something.
export const session = { owner: null, isAdmin: false, via: null, csrf: null, keysRequired: false };

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), API_BASE);
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const options = { method, signal, headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    options.body = body; // multipart: the browser writes the Content-Type with its boundary
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (method !== "GET" && session.csrf) options.headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(apiUrl(path), options); // same origin: the cookie goes along
  if (response.status === 401 && path !== "auth/session") {
    window.dispatchEvent(new CustomEvent("trainyard:signed-out"));
  }
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("application/json")) data = await response.json();
  if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : null);
  return data;
}

/**
 * Run `task` now and then every `ms` after each run finishes, until the returned stop() is
 * called or `task` returns false. Skips runs while the tab is hidden.
 */
export function poll(task, ms) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    let again = true;
    if (!document.hidden) {
      try {
        again = (await task()) !== false;
      } catch (exc) {
        if (exc.name !== "AbortError") console.warn("poll", exc);
      }
    }
    if (!stopped && again) timer = window.setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    if (timer !== null) window.clearTimeout(timer);
  };
}
