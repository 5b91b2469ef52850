// The page's address: a hash route (#/, #/jobs/42, #/sweeps/7, #/compare?ids=1,2, #/new) read and written.
// Which page each route shows is app.js's business; pages only ask to go somewhere.
"use strict";

/** The current route: its path ("/jobs/42") and its query (URLSearchParams). */
export function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path, params: new URLSearchParams(query) };
}

/** Go to a route; the hashchange that follows makes app.js show it. */
export function navigate(path, params) {
  const query = params ? params.toString() : "";
  window.location.hash = `#${path}${query ? `?${query}` : ""}`;
}
