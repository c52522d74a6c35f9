// Account settings, for anyone signed in: change the password, see and end sessions,
// delete the account (docs/api.md, "Account settings"). Built when a user signs in and
// removed when they sign out, so the login form is the only form on the page then.

import { api, ApiError, el, handle, logout, notice, show, signedIn, table, when } from "./app.js";

const ROOT = "account-settings";

function field(id, label, props = {}) {
  return el("div", { class: "field grow" },
    el("label", { for: id, text: label }),
    el("input", { id, type: "password", required: true, maxlength: 1024, ...props }));
}

function build() {
  const passwordError = el("p", { id: "password-error", class: "error", role: "alert", hidden: true });
  const sessionsError = el("p", { id: "sessions-error", class: "error", role: "alert", hidden: true });
  const deleteError = el("p", { id: "delete-error", class: "error", role: "alert", hidden: true });
  return el("section", { id: ROOT, class: "card", "aria-labelledby": "settings-title" },
    el("h2", { id: "settings-title", text: "Account settings" }),

    el("h3", { text: "Change password" }),
    el("p", { class: "muted small", text: "Changing it ends your sessions everywhere else." }),
    el("form", { id: "password-form", class: "row", novalidate: true, onsubmit: changePassword },
      field("current-password", "Current password", { autocomplete: "current-password" }),
      field("new-password", "New password", { autocomplete: "new-password", minlength: 8 }),
      field("repeat-password", "New password again", { autocomplete: "new-password" }),
      el("button", { type: "submit", class: "primary", text: "Change password" })),
    passwordError,

    el("div", { class: "card-head" },
      el("h3", { text: "Sessions" }),
      el("button", { type: "button", id: "end-others", onclick: endOthers, text: "End all other sessions" })),
    el("p", { class: "muted small", text: "Where you are signed in. Ending a session signs that browser out at once." }),
    el("div", { id: "sessions-list" }),
    sessionsError,

    el("h3", { text: "Delete account" }),
    el("p", { class: "muted small", text: "Your API keys stop working and every session ends. "
      + "What you used stays in the operator's totals, no longer under your name. This cannot be undone." }),
    el("form", { id: "delete-form", class: "row", novalidate: true, onsubmit: deleteAccount },
      field("delete-password", "Your password, to confirm", { autocomplete: "current-password" }),
      el("button", { type: "submit", class: "danger", text: "Delete my account" })),
    deleteError,
  );
}

// --- sessions ------------------------------------------------------------------------------

// "Firefox on Windows" from a User-Agent; a program's own name ("python-httpx/0.28") as is.
const BROWSERS = [["Edg/", "Edge"], ["OPR/", "Opera"], ["Firefox/", "Firefox"],
  ["HeadlessChrome/", "Headless Chrome"], ["Chrome/", "Chrome"], ["Safari/", "Safari"]];
const SYSTEMS = [["Windows", "Windows"], ["Android", "Android"], ["iPhone", "iOS"], ["iPad", "iPadOS"],
  ["Mac OS X", "macOS"], ["CrOS", "ChromeOS"], ["Linux", "Linux"]];

function device(agent) {
  const browser = BROWSERS.find(([mark]) => agent.includes(mark));
  if (!browser) return agent.length > 60 ? `${agent.slice(0, 60)}…` : agent;
  const system = SYSTEMS.find(([mark]) => agent.includes(mark));
  return system ? `${browser[1]} on ${system[1]}` : browser[1];
}

function sessionRow(session) {
  const agent = session.agent || "unknown client";
  const end = session.current
    ? el("span", { class: "badge ok", text: "this browser" })
    : el("button", {
      type: "button", class: "danger small", text: "End",
      "aria-label": `End the session of ${device(agent)}, last used ${when(session.last_used)}`,
      onclick: () => endSession(session),
    });
  return el("tr", { "data-session-id": session.id },
    el("td", { title: agent, text: device(agent) }),
    el("td", { text: session.address || "—" }),
    el("td", { text: when(session.created) }),
    el("td", { text: when(session.last_used) }),
    el("td", { class: "num" }, end));
}

async function loadSessions() {
  const error = document.getElementById("sessions-error");
  try {
    const reply = await api("/v1/auth/sessions");
    const rows = (Array.isArray(reply && reply.data) ? reply.data : []).map(sessionRow);
    document.getElementById("sessions-list").replaceChildren(table("Your sessions",
      [["Browser or program"], ["Address"], ["Signed in"], ["Last used"], ["", "num"]],
      rows, "No sessions."));
    show(error, "");
  } catch (failure) {
    handle(failure, error, "list your sessions");
  }
}

async function endSession(session) {
  try {
    await api(`/v1/auth/sessions/${encodeURIComponent(session.id)}`, { method: "DELETE" });
    notice("The session is ended: that browser is signed out.");
  } catch (failure) {
    handle(failure, document.getElementById("sessions-error"), "end the session");
  }
  await loadSessions();
}

async function endOthers() {
  if (!window.confirm("Sign out everywhere but here?")) return;
  try {
    const reply = await api("/v1/auth/sessions", { method: "DELETE" });
    const count = Array.isArray(reply && reply.ended) ? reply.ended.length : 0;
    notice(count === 1 ? "1 other session ended." : `${count} other sessions ended.`);
  } catch (failure) {
    handle(failure, document.getElementById("sessions-error"), "end your other sessions");
  }
  await loadSessions();
}

// --- password and deletion -----------------------------------------------------------------

async function changePassword(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = document.getElementById("password-error");
  const [current, fresh, again] = ["current-password", "new-password", "repeat-password"]
    .map((id) => document.getElementById(id));
  if (!current.value || !fresh.value) {
    show(error, "Enter your current password and a new one.");
    (current.value ? fresh : current).focus();
    return;
  }
  if (fresh.value !== again.value) {
    show(error, "The new password and its repeat differ.");
    again.focus();
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const reply = await api("/v1/auth/password",
      { method: "POST", body: { current_password: current.value, new_password: fresh.value } });
    form.reset();
    show(error, "");
    const ended = Number(reply && reply.sessions_ended) || 0;
    notice(`Password changed. ${ended === 1 ? "1 other session" : `${ended} other sessions`} ended.`);
    await loadSessions();
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 403) show(error, "The current password is wrong.");
    else if (failure instanceof ApiError && failure.status === 400) show(error, failure.message);
    else handle(failure, error, "change the password");
    current.focus();
  } finally {
    button.disabled = false;
  }
}

async function deleteAccount(event) {
  event.preventDefault();
  const error = document.getElementById("delete-error");
  const password = document.getElementById("delete-password");
  if (!password.value) {
    show(error, "Enter your password to confirm.");
    password.focus();
    return;
  }
  const name = (signedIn() || {}).username || "your account";
  if (!window.confirm(`Delete ${name} for good? Its API keys stop working at once.`)) return;
  try {
    await api("/v1/auth/delete", { method: "POST", body: { password: password.value } });
    logout("Your account is deleted.");
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 403) show(error, "The password is wrong.");
    else handle(failure, error, "delete the account");
    password.focus();
  }
}

// --- the page ------------------------------------------------------------------------------

function remove() {
  const old = document.getElementById(ROOT);
  if (old) old.remove();
}

function start() {
  remove();
  document.getElementById("app-view").append(build());
  loadSessions();
}

document.addEventListener("bitinglip:signed-in", start);
document.addEventListener("bitinglip:signed-out", remove);
if (signedIn()) start();
