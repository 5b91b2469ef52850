// Trainyard dashboard: a hash router (#/, #/jobs/42, #/compare?ids=1,2, #/new) and the jobs page.
// Every value from the server is user data: it enters the page through textContent only (see
// js/dom.js); there is no inline script and no markup built from strings.
"use strict";

import { api, ApiError, API_BASE, poll, session } from "./js/api.js";
import {
  ACTIVE, fmtDuration, fmtMetric, h, jobDuration, METRIC_SHORT, progressBar, scrollTable,
  setText, statusBadge, updateProgress,
} from "./js/dom.js";

export const REFRESH_MS = 2000; // live updates: every view polls the API at most this often

const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const PAGE_SIZES = [25, 50, 100, 200];
// Runs ticked on the jobs page, kept while paging and filtering, for "Compare selected".
export const selection = new Set();

// ---- router ------------------------------------------------------------------------------

const routes = [
  { pattern: /^\/?$/, nav: "jobs", load: async () => ({ mount: mountJobs }) },
  { pattern: /^\/jobs\/(\d+)$/, nav: "jobs", load: () => import("./js/job.js") },
  { pattern: /^\/compare$/, nav: "compare", load: () => import("./js/compare.js") },
  { pattern: /^\/new$/, nav: "new", load: () => import("./js/submit.js") },
];

let unmount = null;

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

export function navigate(path, params) {
  const query = params ? params.toString() : "";
  window.location.hash = `#${path}${query ? `?${query}` : ""}`;
}

export function showError(message) {
  const banner = document.getElementById("error");
  if (!message) {
    banner.hidden = true;
    return;
  }
  setText(banner, message);
  banner.hidden = false;
}

function leaveView() {
  if (unmount) {
    try {
      unmount();
    } catch (exc) {
      console.warn(exc);
    }
    unmount = null;
  }
  showError(null);
  const view = document.getElementById("view");
  view.replaceChildren();
  view.dataset.state = "loading";
  return view;
}

async function route() {
  const { path, params } = parseHash();
  if (!session.owner) {
    showSignIn();
    return;
  }
  const view = leaveView();
  const match = routes.map((r) => [r, path.match(r.pattern)]).find(([, m]) => m);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", Boolean(match) && link.dataset.nav === match[0].nav);
  }
  if (!match) {
    view.append(h("div", { class: "empty" }, h("h2", { text: "No such page" }),
      h("p", {}, "Go to the ", h("a", { href: "#/", text: "jobs list" }), ".")));
    view.dataset.state = "ready";
    return;
  }
  const [entry, m] = match;
  try {
    const module = await entry.load();
    unmount = (await module.mount(view, { params, match: m })) || null;
  } catch (exc) {
    showError(`This page failed to load: ${exc.message}`);
    view.dataset.state = "error";
  }
}

// ---- who am I: API key sign-in -------------------------------------------------------------

function showUser() {
  const who = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  setText(who, session.owner ? `${session.owner}${session.isAdmin && session.via !== "local" ? " (admin)" : ""}` : "");
  who.hidden = !session.owner || session.via === "local";
  signOut.hidden = session.via !== "session";
}

// me: an answer of auth/session; null: signed out.
function setSession(me) {
  Object.assign(session, me
    ? { owner: me.owner, isAdmin: me.is_admin, via: me.via, csrf: me.csrf_token, keysRequired: me.keys_required }
    : { owner: null, isAdmin: false, via: null, csrf: null });
  showUser();
}

async function loadSession() {
  try {
    setSession(await api("auth/session"));
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status !== 401) throw exc;
    session.keysRequired = true;
    setSession(null);
  }
}

function showSignIn() {
  const view = leaveView();
  const key = h("input", { type: "password", id: "signin-key", name: "key", required: true,
    autocomplete: "current-password", placeholder: "ty_…", "aria-label": "API key" });
  const problem = h("p", { class: "field-error", id: "signin-error", role: "alert" });
  const form = h("form", { class: "card signin", id: "signin", on: { submit: async (e) => {
    e.preventDefault();
    setText(problem, "");
    try {
      setSession(await api("auth/session", { method: "POST", body: { key: key.value.trim() } }));
      key.value = "";
      route();
    } catch (exc) {
      setText(problem, exc.status === 401 ? "That key is not valid (or was revoked)." : exc.message);
    }
  } } },
  h("h1", { text: "Sign in" }),
  h("p", {}, "This Trainyard asks for an API key. Ask whoever runs it for one; on the server, ",
    h("code", { text: "trainyard keys create --name <you>" }), " makes one."),
  h("label", { class: "field" }, h("span", { text: "API key" }), key),
  problem,
  h("button", { type: "submit", class: "btn btn-primary", text: "Sign in" }));
  view.append(form);
  view.dataset.state = "signin";
  key.focus();
}

async function signOut() {
  try {
    await api("auth/session", { method: "DELETE" });
  } catch (exc) {
    console.warn("sign out", exc);
  }
  setSession(null);
  showSignIn();
}

window.addEventListener("trainyard:signed-out", () => {
  if (!session.owner) return;
  setSession(null);
  showSignIn();
});
window.addEventListener("hashchange", route);
document.getElementById("sign-out").addEventListener("click", signOut);
// A module script runs once the document is parsed.
loadSession().then(route, (exc) => showError(`Cannot reach the API: ${exc.message}`));

// ---- jobs page ---------------------------------------------------------------------------

function queryFrom(params) {
  const q = new URLSearchParams();
  for (const key of ["status", "model", "before", "after"]) {
    if (params.get(key)) q.set(key, params.get(key));
  }
  q.set("limit", PAGE_SIZES.includes(Number(params.get("limit"))) ? params.get("limit") : "50");
  return q;
}

function jobRow(job, onCancel, onSelect) {
  const check = h("input", {
    type: "checkbox", class: "select-run", "aria-label": `select job ${job.id} to compare`,
    on: { change: () => onSelect(job.id, check.checked) },
  });
  const cancel = h("button", {
    type: "button", class: "btn btn-small btn-danger", text: "Cancel",
    on: { click: () => onCancel(job.id, cancel) },
  });
  const nameLink = h("a", { href: `#/jobs/${job.id}`, class: "job-name" });
  const owner = h("span", { class: "owner muted" }); // an admin sees whose job it is
  const cells = {
    select: h("td", { class: "col-select" }, check),
    id: h("td", { class: "col-id", dataset: { label: "id" } }, h("a", { href: `#/jobs/${job.id}`, text: `#${job.id}` })),
    name: h("td", { class: "col-name", dataset: { label: "name" } }, nameLink, owner),
    status: h("td", { class: "col-status", dataset: { label: "status" } }),
    model: h("td", { dataset: { label: "model" } }),
    dataset: h("td", { dataset: { label: "dataset" } }),
    device: h("td", { dataset: { label: "device" } }),
    progress: h("td", { class: "col-progress", dataset: { label: "progress" } }, progressBar(job)),
    duration: h("td", { class: "num", dataset: { label: "duration" } }),
    best: h("td", { class: "num", dataset: { label: "best" } }),
    actions: h("td", { class: "col-actions" }, cancel),
  };
  const tr = h("tr", { dataset: { jobId: String(job.id) } }, Object.values(cells));
  const update = (j) => {
    check.checked = selection.has(j.id);
    setText(nameLink, j.name || `job ${j.id}`);
    setText(owner, j.owner && j.owner !== session.owner ? `by ${j.owner}` : "");
    nameLink.title = j.name || "";
    const badge = cells.status.firstChild;
    if (!badge || badge.textContent !== j.status) cells.status.replaceChildren(statusBadge(j.status));
    setText(cells.model, j.model);
    setText(cells.dataset, j.dataset);
    setText(cells.device, j.device);
    updateProgress(cells.progress.firstChild, j);
    setText(cells.duration, fmtDuration(jobDuration(j)));
    const best = j.best_metric;
    setText(cells.best, best ? `${METRIC_SHORT[best.name] || best.name} ${fmtMetric(best.name, best.value)}` : "–");
    cancel.hidden = !ACTIVE.has(j.status);
    tr.className = `job-row row-${j.status}`;
  };
  update(job);
  return { tr, update };
}

async function mountJobs(view, { params }) {
  const query = queryFrom(params);
  const models = await api("models").catch(() => ({}));

  const statusSelect = h("select", { id: "filter-status", "aria-label": "status" },
    h("option", { value: "", text: "all statuses" }),
    STATUSES.map((s) => h("option", { value: s, text: s })));
  statusSelect.value = query.get("status") || "";
  const modelSelect = h("select", { id: "filter-model", "aria-label": "model" },
    h("option", { value: "", text: "all models" }),
    Object.keys(models).map((m) => h("option", { value: m, text: m })));
  modelSelect.value = query.get("model") || "";
  const sizeSelect = h("select", { id: "page-size", "aria-label": "jobs per page" },
    PAGE_SIZES.map((n) => h("option", { value: String(n), text: `${n} per page` })));
  sizeSelect.value = query.get("limit");

  const refilter = () => {
    const next = new URLSearchParams();
    if (statusSelect.value) next.set("status", statusSelect.value);
    if (modelSelect.value) next.set("model", modelSelect.value);
    if (sizeSelect.value !== "50") next.set("limit", sizeSelect.value);
    navigate("/", next);
  };
  for (const el of [statusSelect, modelSelect, sizeSelect]) el.addEventListener("change", refilter);

  const compareBtn = h("button", { type: "button", id: "compare-selected", class: "btn btn-primary" });
  const clearBtn = h("button", { type: "button", class: "btn btn-link", text: "clear selection" });
  const updateSelection = () => {
    setText(compareBtn, `Compare selected (${selection.size})`);
    compareBtn.disabled = selection.size === 0;
    clearBtn.hidden = selection.size === 0;
  };
  compareBtn.addEventListener("click", () => {
    navigate("/compare", new URLSearchParams({ ids: [...selection].sort((a, b) => a - b).join(",") }));
  });

  const selectAll = h("input", { type: "checkbox", id: "select-page", "aria-label": "select every job on this page" });
  const tbody = h("tbody");
  const table = h("table", { class: "jobs-table", id: "jobs" },
    h("thead", {}, h("tr", {},
      h("th", { class: "col-select" }, selectAll),
      ["id", "name", "status", "model", "dataset", "device", "progress", "duration", "best", ""]
        .map((t) => h("th", { text: t, class: ["duration", "best"].includes(t) ? "num" : null })))),
    tbody);
  const pagerText = h("span", { class: "pager-text", id: "pager-text" });
  const newest = h("button", { type: "button", class: "btn", text: "⇤ Newest" });
  const newer = h("button", { type: "button", class: "btn", id: "page-newer", text: "← Newer" });
  const older = h("button", { type: "button", class: "btn", id: "page-older", text: "Older →" });
  const pager = h("div", { class: "pager" }, pagerText, h("span", { class: "pager-buttons" }, newest, newer, older));
  const empty = h("div", { id: "jobs-empty" });
  const wrap = scrollTable(table);

  view.append(
    h("div", { class: "page-head" },
      h("h1", { text: "Jobs" }),
      h("a", { href: "#/new", class: "btn btn-primary", text: "+ New job" })),
    h("div", { class: "toolbar" },
      h("label", { class: "field-inline" }, "Status ", statusSelect),
      h("label", { class: "field-inline" }, "Model ", modelSelect),
      h("label", { class: "field-inline" }, sizeSelect),
      h("span", { class: "toolbar-spacer" }),
      compareBtn, clearBtn),
    empty, wrap, pager);
  updateSelection();

  const rows = new Map(); // job id -> {tr, update}
  let page = [];
  let lastBody = null;

  const onSelect = (id, checked) => {
    if (checked) selection.add(id);
    else selection.delete(id);
    updateSelection();
    selectAll.checked = page.length > 0 && page.every((j) => selection.has(j.id));
  };
  selectAll.addEventListener("change", () => {
    for (const job of page) onSelect(job.id, selectAll.checked);
    render(lastBody);
  });
  clearBtn.addEventListener("click", () => {
    selection.clear();
    updateSelection();
    render(lastBody);
  });
  const onCancel = async (id, button) => {
    button.disabled = true;
    try {
      await api(`jobs/${id}/cancel`, { method: "POST" });
      showError(null);
    } catch (exc) {
      showError(exc instanceof ApiError && exc.status === 409 ? exc.message : `Cancel failed: ${exc.message}`);
    } finally {
      button.disabled = false;
      refresh();
    }
  };

  function render(body) {
    if (!body) return;
    lastBody = body;
    page = body.items;
    const filtered = query.get("status") || query.get("model");
    if (body.total === 0) {
      wrap.hidden = true;
      pager.hidden = true;
      const box = filtered
        ? h("div", { class: "empty" }, h("h2", { text: "No jobs match these filters" }),
          h("p", {}, h("a", { href: "#/", text: "Show every job" }), " or submit one with the ",
            h("a", { href: "#/new", text: "New job" }), " form."))
        : document.getElementById("empty-jobs").content.cloneNode(true);
      for (const el of box.querySelectorAll ? box.querySelectorAll("[data-api-url]") : []) {
        el.textContent = API_BASE.href.replace(/\/$/, "");
      }
      empty.replaceChildren(box);
      empty.hidden = false;
      return;
    }
    empty.hidden = true;
    wrap.hidden = false;
    pager.hidden = false;
    const ordered = [];
    for (const job of body.items) {
      let row = rows.get(job.id);
      if (row) row.update(job);
      else {
        row = jobRow(job, onCancel, onSelect);
        rows.set(job.id, row);
      }
      ordered.push(row.tr);
    }
    for (const id of [...rows.keys()]) if (!body.items.some((j) => j.id === id)) rows.delete(id);
    // Move rows only when the order changed, so a button being clicked is not replaced.
    const current = [...tbody.children];
    if (current.length !== ordered.length || current.some((tr, i) => tr !== ordered[i])) {
      tbody.replaceChildren(...ordered);
    }
    selectAll.checked = page.every((j) => selection.has(j.id));
    const first = body.offset + 1;
    const last = body.offset + body.items.length;
    setText(pagerText, body.items.length
      ? `${first.toLocaleString()}–${last.toLocaleString()} of ${body.total.toLocaleString()} jobs`
      : `no jobs on this page (${body.total.toLocaleString()} in all)`);
    newer.disabled = body.offset === 0;
    newest.disabled = body.offset === 0 && !query.get("before") && !query.get("after");
    older.disabled = last >= body.total;
    newer.onclick = () => {
      const next = new URLSearchParams(query);
      next.delete("before");
      if (body.items.length) next.set("after", String(body.items[0].id));
      else next.delete("after");
      navigate("/", next);
    };
    older.onclick = () => {
      const next = new URLSearchParams(query);
      next.delete("after");
      next.set("before", String(body.items[body.items.length - 1].id));
      navigate("/", next);
    };
    newest.onclick = () => {
      const next = new URLSearchParams(query);
      next.delete("after");
      next.delete("before");
      navigate("/", next);
    };
  }

  const live = document.getElementById("live");
  let unreachable = false;
  async function refresh() {
    try {
      // jobs?limit=N&before=ID: keyset pages (an index range each), polled every 2000 ms
      const body = await api(`jobs?${query.toString()}`);
      render(body);
      view.dataset.state = "ready";
      live.hidden = false;
      if (unreachable) showError(null);
      unreachable = false;
    } catch (exc) {
      live.hidden = true;
      unreachable = true;
      showError(`Cannot reach the API: ${exc.message}`);
    }
  }
  const stop = poll(refresh, REFRESH_MS);
  // The job and compare pages draw with plotly.js: fetch and compile it while this page idles,
  // so that "Compare selected" opens without waiting for it.
  const preload = () => import("./js/charts.js").then((m) => m.loadPlotly()).catch(() => {});
  const idle = window.requestIdleCallback ? window.requestIdleCallback(preload, { timeout: 3000 }) : window.setTimeout(preload, 1500);
  return () => {
    stop();
    if (window.cancelIdleCallback && window.requestIdleCallback) window.cancelIdleCallback(idle);
    else window.clearTimeout(idle);
    live.hidden = true;
  };
}
