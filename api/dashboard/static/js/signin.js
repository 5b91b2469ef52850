// Who the page acts for: the session (GET auth/session), the API-key sign-in form, sign-out, and
// the user's name in the top bar. A signed-in page holds an HttpOnly cookie it cannot read.
"use strict";

import { api, ApiError, session } from "./api.js";
import { h, setText } from "./dom.js";

function showUser() {
  const who = document.getElementById("who");
  const signOutButton = document.getElementById("sign-out");
  setText(who, session.owner ? `${session.owner}${session.isAdmin && session.via !== "local" ? " (admin)" : ""}` : "");
  who.hidden = !session.owner || session.via === "local";
  signOutButton.hidden = session.via !== "session";
}

/** me: an answer of auth/session; null: signed out. */
export function setSession(me) {
  Object.assign(session, me
    ? { owner: me.owner, isAdmin: me.is_admin, via: me.via, csrf: me.csrf_token, keysRequired: me.keys_required }
    : { owner: null, isAdmin: false, via: null, csrf: null });
  showUser();
}

/** Ask the API who we are; a 401 means it wants a key and we have none yet. */
export async function loadSession() {
  try {
    setSession(await api("auth/session"));
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status !== 401) throw exc;
    session.keysRequired = true;
    setSession(null);
  }
}

/** End the session on the server (a failure there still signs this page out). */
export async function signOut() {
  try {
    await api("auth/session", { method: "DELETE" });
  } catch (exc) {
    console.warn("sign out", exc);
  }
  setSession(null);
}

function buildForm() {
  const key = h("input", { type: "password", id: "signin-key", name: "key", required: true,
    autocomplete: "current-password", placeholder: "ty_…", "aria-label": "API key" });
  const problem = h("p", { class: "field-error", id: "signin-error", role: "alert" });
  const form = h("form", { class: "card signin", id: "signin" },
    h("h1", { text: "Sign in" }),
    h("p", {}, "This Trainyard asks for an API key. Ask whoever runs it for one; on the server, ",
      h("code", { text: "trainyard keys create --name <you>" }), " makes one."),
    h("label", { class: "field" }, h("span", { text: "API key" }), key),
    problem,
    h("button", { type: "submit", class: "btn btn-primary", text: "Sign in" }));
  return { form, key, problem };
}

async function submitKey({ key, problem }, onSignedIn) {
  setText(problem, "");
  try {
    setSession(await api("auth/session", { method: "POST", body: { key: key.value.trim() } }));
    key.value = "";
    onSignedIn();
  } catch (exc) {
    setText(problem, exc.status === 401 ? "That key is not valid (or was revoked)." : exc.message);
  }
}

/** The sign-in form in `view`; a valid key starts a session, then onSignedIn() runs. */
export function mountSignIn(view, onSignedIn) {
  const ui = buildForm();
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitKey(ui, onSignedIn);
  });
  view.append(ui.form);
  view.dataset.state = "signin";
  ui.key.focus();
}
