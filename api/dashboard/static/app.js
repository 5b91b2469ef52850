// Trainyard dashboard: the shell. It signs the page in, then shows the page the hash route names
// (#/, #/jobs/42, #/sweeps, #/sweeps/7, #/compare?ids=1,2, #/new, #/datasets, #/datasets/digits2)
// in <main id="view">, unmounting the one before.
// Every value from the server is user data: it enters the page through textContent only (see
// js/dom.js); there is no inline script and no markup built from strings.
"use strict";

import { session } from "./js/api.js";
import { showError } from "./js/banner.js";
import { h } from "./js/dom.js";
import * as jobsPage from "./js/jobs.js";
import { parseHash } from "./js/router.js";
import { loadSession, mountSignIn, setSession, signOut } from "./js/signin.js";

// Each page is a module whose mount(view, {params, match}) draws it and returns its unmount
// (or null). The jobs list is the landing page, so it comes with the shell; the others load
// when first visited.
const routes = [
  { pattern: /^\/?$/, nav: "jobs", load: async () => jobsPage },
  { pattern: /^\/jobs\/(\d+)$/, nav: "jobs", load: () => import("./js/job.js") },
  { pattern: /^\/sweeps$/, nav: "sweeps", load: () => import("./js/sweeps.js") },
  { pattern: /^\/sweeps\/(\d+)$/, nav: "sweeps", load: () => import("./js/sweep.js") },
  { pattern: /^\/compare$/, nav: "compare", load: () => import("./js/compare.js") },
  { pattern: /^\/new$/, nav: "new", load: () => import("./js/submit.js") },
  { pattern: /^\/datasets$/, nav: "datasets", load: () => import("./js/datasets.js") },
  { pattern: /^\/datasets\/([^/?]+)$/, nav: "datasets", load: () => import("./js/dataset.js") },
  { pattern: /^\/workers$/, nav: "workers", load: () => import("./js/workers.js") },
  { pattern: /^\/usage$/, nav: "usage", load: () => import("./js/usage.js") }, // lifecycle
];

let unmount = null;

/** Unmount the current page and hand back the emptied view. */
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

function findRoute(path) {
  for (const entry of routes) {
    const match = path.match(entry.pattern);
    if (match) return { entry, match };
  }
  return null;
}

function highlightNav(nav) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === nav);
  }
}

function showNotFound(view) {
  view.append(h("div", { class: "empty" }, h("h2", { text: "No such page" }),
    h("p", {}, "Go to the ", h("a", { href: "#/", text: "jobs list" }), ".")));
  view.dataset.state = "ready";
}

async function showPage(view, { entry, match }, params) {
  try {
    const page = await entry.load();
    unmount = (await page.mount(view, { params, match })) || null;
  } catch (exc) {
    showError(`This page failed to load: ${exc.message}`);
    view.dataset.state = "error";
  }
}

async function route() {
  if (!session.owner) {
    showSignIn();
    return;
  }
  const { path, params } = parseHash();
  const view = leaveView();
  const found = findRoute(path);
  highlightNav(found ? found.entry.nav : null);
  if (found) await showPage(view, found, params);
  else showNotFound(view);
}

function showSignIn() {
  mountSignIn(leaveView(), route);
}

window.addEventListener("trainyard:signed-out", () => {
  if (!session.owner) return;
  setSession(null);
  showSignIn();
});
window.addEventListener("hashchange", route);
document.getElementById("sign-out").addEventListener("click", () => signOut().then(showSignIn));
// A module script runs once the document is parsed.
loadSession().then(route, (exc) => showError(`Cannot reach the API: ${exc.message}`));
