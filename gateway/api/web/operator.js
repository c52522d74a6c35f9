// The operator's views, for an admin signed in: users, every API key, the plans, the nodes
// with their models, and usage across users and models (docs/api.md, "/v1/admin"). Built
// only when the profile says admin, and removed at sign-out; the gateway checks every call.

import { api, el, handle, meter, notice, numbers, shortId, show, signedIn, svg, table, when } from "./app.js";

const ROOT = "operator";
const $ = (id) => document.getElementById(id);

let plans = []; // the configured plans, for the pickers

function part(id, title, ...children) {
  return el("div", { id, class: "operator-part" },
    el("h3", { text: title }), ...children,
    el("p", { id: `${id}-error`, class: "error", role: "alert", hidden: true }));
}

function planPicker(id, label, chosen, onchange) {
  return el("select", { id, "aria-label": label, onchange },
    ...plans.map((p) => el("option", { value: p.name, selected: p.name === chosen, text: p.name })));
}

function build() {
  return el("section", { id: ROOT, class: "card", "aria-labelledby": "operator-title" },
    el("div", { class: "card-head" },
      el("h2", { id: "operator-title", text: "Operator" }),
      el("button", { type: "button", class: "ghost small", onclick: loadAll, text: "Refresh" })),
    el("p", { class: "muted small", text: "Only admins of this gateway see this part of the page." }),
    part("op-users", "Users",
      el("form", { id: "add-user-form", class: "row", novalidate: true, onsubmit: addUser },
        el("div", { class: "field grow" }, el("label", { for: "new-user-name", text: "New user's name" }),
          el("input", { id: "new-user-name", required: true, maxlength: 32, autocomplete: "off",
            autocapitalize: "none", spellcheck: "false" })),
        el("div", { class: "field grow" }, el("label", { for: "new-user-password", text: "Their first password" }),
          el("input", { id: "new-user-password", type: "password", required: true, minlength: 8,
            maxlength: 1024, autocomplete: "new-password" })),
        el("div", { class: "field" }, el("label", { for: "new-user-plan", text: "On plan" }),
          el("select", { id: "new-user-plan" })),
        el("button", { type: "submit", class: "primary", text: "Add user" })),
      el("div", { id: "op-users-list" }),
      el("form", { id: "reset-form", class: "row", novalidate: true, onsubmit: resetPassword },
        el("div", { class: "field" }, el("label", { for: "reset-user", text: "Reset the password of" }),
          el("select", { id: "reset-user" })),
        el("div", { class: "field grow" }, el("label", { for: "reset-password", text: "To a new one" }),
          el("input", { id: "reset-password", type: "password", required: true, minlength: 8,
            maxlength: 1024, autocomplete: "new-password" })),
        el("button", { type: "submit", text: "Reset and sign them out" }))),
    part("op-keys", "All API keys", el("div", { id: "op-keys-list" })),
    part("op-plans", "Plans", el("div", { id: "op-plans-list" })),
    part("op-nodes", "Nodes and models",
      el("p", { class: "muted small", text: "This gateway holds no operator certificate, so it cannot load, "
        + "unload or drain anything itself. Run the command shown on a machine with the operator key "
        + "(bitinglip keys init made it), in the swarm's data dir. Unloading a model drains its calls "
        + "first; a whole node drains when its process is stopped (Ctrl-C or SIGTERM on its host): nodes "
        + "take no operator call for that." }),
      el("div", { id: "op-nodes-list" })),
    part("op-usage", "Usage by user and model",
      el("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
        el("label", { for: "op-usage-days", class: "small muted", text: "Period" }),
        el("select", { id: "op-usage-days", onchange: loadUsage },
          ...[7, 30, 90].map((d) => el("option", { value: d, selected: d === 30, text: `${d} days` })))),
      el("figure", { class: "chart" }, el("div", { id: "op-usage-chart" }),
        el("figcaption", { id: "op-usage-legend", class: "legend" })),
      el("div", { id: "op-usage-tables", class: "usage-split" })),
  );
}

// --- users ---------------------------------------------------------------------------------

async function patchUser(user, change, what) {
  try {
    await api(`/v1/admin/users/${encodeURIComponent(user.username)}`, { method: "PATCH", body: change });
    notice(`${user.username}: ${what}.`);
    show($("op-users-error"), "");
  } catch (failure) {
    handle(failure, $("op-users-error"), `change ${user.username}`);
  }
  await loadUsers();
}

function userRow(user) {
  const state = user.disabled ? ["bad", "disabled"] : ["ok", "active"];
  const toggle = user.disabled ? "Enable" : "Disable";
  return el("tr", { "data-user": user.username },
    el("td", {}, el("strong", { text: user.username }),
      user.admin ? el("span", { class: "badge", text: "admin" }) : null),
    el("td", {}, planPicker(null, `Plan of ${user.username}`, user.plan,
      (e) => patchUser(user, { plan: e.target.value }, `now on plan ${e.target.value}`))),
    el("td", {}, el("span", { class: `badge ${state[0]}`, text: state[1] })),
    el("td", { text: when(user.created) }),
    // An admin cannot disable themselves (the gateway refuses it): no button to try.
    el("td", { class: "num" }, user.username === (signedIn() || {}).username ? null : el("button", {
      type: "button", class: user.disabled ? "small" : "danger small", text: toggle,
      "aria-label": `${toggle} ${user.username}`,
      onclick: () => patchUser(user, { disabled: !user.disabled }, user.disabled ? "enabled" : "disabled"),
    })));
}

async function loadUsers() {
  try {
    const users = (await api("/v1/admin/users")).data || [];
    $("op-users-list").replaceChildren(table("Users of this gateway",
      [["User"], ["Plan"], ["State"], ["Created"], ["", "num"]], users.map(userRow), "No users yet."));
    $("reset-user").replaceChildren(
      ...users.map((u) => el("option", { value: u.username, text: u.username })));
  } catch (failure) {
    handle(failure, $("op-users-error"), "list the users");
  }
}

async function addUser(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const name = $("new-user-name").value.trim();
  const password = $("new-user-password").value;
  if (!name || !password) {
    show($("op-users-error"), "Give the new user a name and a first password.");
    return;
  }
  try {
    await api("/v1/admin/users", { method: "POST", body: { username: name, password, plan: $("new-user-plan").value } });
    form.reset();
    show($("op-users-error"), "");
    notice(`User ${name} added.`);
  } catch (failure) {
    handle(failure, $("op-users-error"), `add ${name}`);
  }
  await loadUsers();
}

async function resetPassword(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const name = $("reset-user").value;
  const password = $("reset-password").value;
  if (!name || !password) {
    show($("op-users-error"), "Choose a user and give them a new password.");
    return;
  }
  try {
    const reply = await api(`/v1/admin/users/${encodeURIComponent(name)}/password`,
      { method: "POST", body: { password } });
    form.reset();
    show($("op-users-error"), "");
    notice(`Password of ${name} reset; ${reply.sessions_ended} of their sessions ended.`);
  } catch (failure) {
    handle(failure, $("op-users-error"), `reset the password of ${name}`);
  }
  await loadUsers();
}

// --- keys and plans ------------------------------------------------------------------------

function keyRow(key) {
  const expired = key.expires_at * 1000 <= Date.now();
  const state = key.revoked ? ["bad", "revoked"] : expired ? ["warn", "expired"] : ["ok", "active"];
  const revoke = state[1] === "active"
    ? el("button", { type: "button", class: "danger small", text: "Revoke",
      "aria-label": `Revoke ${key.user}'s key ${key.name}`, onclick: () => revokeKey(key) })
    : null;
  return el("tr", { "data-key-id": key.id },
    el("td", { text: key.user }),
    el("td", { text: key.name }),
    el("td", {}, el("code", { text: key.id })),
    el("td", { text: when(key.created) }),
    el("td", { text: when(key.expires_at) }),
    el("td", {}, el("span", { class: `badge ${state[0]}`, text: state[1] })),
    el("td", { class: "num" }, revoke));
}

async function loadKeys() {
  try {
    const keys = (await api("/v1/admin/keys")).data || [];
    $("op-keys-list").replaceChildren(table("Every API key on this gateway",
      [["User"], ["Name"], ["Id"], ["Created"], ["Expires"], ["Status"], ["", "num"]],
      keys.map(keyRow), "No API keys yet."));
  } catch (failure) {
    handle(failure, $("op-keys-error"), "list the API keys");
  }
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke ${key.user}'s key “${key.name}”? Programs using it stop working.`)) return;
  try {
    await api(`/v1/admin/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    notice(`Key “${key.name}” of ${key.user} revoked.`);
  } catch (failure) {
    handle(failure, $("op-keys-error"), "revoke the key");
  }
  await loadKeys();
}

async function loadPlans() {
  try {
    const reply = await api("/v1/admin/plans");
    plans = reply.data || [];
    const count = (n) => el("td", { class: "num", text: numbers.format(n) });
    const rows = plans.map((p) => el("tr", {},
      el("td", {}, el("strong", { text: p.name }),
        p.name === reply.default ? el("span", { class: "badge", text: "default" }) : null),
      count(p.requests_per_minute), count(p.tokens_per_day), count(p.images_per_day), count(p.concurrent)));
    $("op-plans-list").replaceChildren(table("Plans configured on this gateway",
      [["Plan"], ["Requests / min", "num"], ["Tokens / day", "num"], ["Images / day", "num"], ["At once", "num"]],
      rows, "No plans."));
    $("new-user-plan").replaceChildren(...plans.map((p) =>
      el("option", { value: p.name, selected: p.name === reply.default, text: p.name })));
  } catch (failure) {
    handle(failure, $("op-plans-error"), "list the plans");
  }
}

// --- nodes ---------------------------------------------------------------------------------

function command(text) {
  return el("code", { class: "command", text });
}

// "2 ready, 1 loading": how many of a node's models are in each state.
function modelStates(models) {
  const counts = new Map();
  for (const m of models) counts.set(m.state, (counts.get(m.state) || 0) + 1);
  return [...counts].map(([state, n]) => `${n} ${state}`).join(", ") || "no models";
}

function nodeRow(node) {
  const load = node.load;
  let state = ["ok", "healthy"];
  if (load && load.draining) state = ["warn", "draining"];
  else if (!node.healthy) state = ["bad", "not responding"];
  const models = (node.models || []).map((m) => el("div", { class: "stack start", "data-model": m.id },
    el("span", { class: `chip state-${m.state}`, title: [m.task, m.dtype].filter(Boolean).join(", "),
      text: `${m.id} · ${m.state}` }),
    command(`bitinglip node unload ${m.id} --peer ${node.peer_id}`)));
  return el("tr", { "data-peer-id": node.peer_id },
    el("td", {}, el("code", { title: node.peer_id, text: shortId(node.peer_id) })),
    el("td", {}, ...models, command(`bitinglip node load MODEL --peer ${node.peer_id}`)),
    el("td", {}, load
      ? el("div", { class: "stack" }, meter(load.inflight, load.capacity, "slots in use"),
        el("small", { text: `${load.inflight}/${load.capacity} running · ${load.queued} queued` }))
      : "—"),
    el("td", {}, el("div", { class: "stack start" }, el("span", { class: `badge ${state[0]}`, text: state[1] }),
      el("small", { class: "model-states", text: modelStates(node.models || []) }))));
}

async function loadNodes() {
  try {
    const nodes = ((await api("/v1/peers")).data || []).filter((p) => p.role === "node");
    $("op-nodes-list").replaceChildren(table("Nodes, their models, and the commands that change them",
      [["Node"], ["Models and commands"], ["Load"], ["State"]], nodes.map(nodeRow), "No nodes yet."));
  } catch (failure) {
    handle(failure, $("op-nodes-error"), "list the nodes");
  }
}

// --- usage ---------------------------------------------------------------------------------

// One table of usage summed by user, model or day, with a bar of tokens on each row.
function usageTable(caption, label, field, rows) {
  const tokens = (r) => r.prompt_tokens + r.completion_tokens;
  const most = Math.max(1, ...rows.map(tokens));
  const body = rows.map((r) => el("tr", { "data-name": r[field] },
    el("td", { text: r[field] }),
    el("td", { class: "num", text: numbers.format(r.requests) }),
    el("td", { class: "num" }, el("div", { class: "stack" }, el("span", { text: numbers.format(tokens(r)) }),
      meter(tokens(r), most, `${r[field]}: tokens`))),
    el("td", { class: "num", text: numbers.format(r.images) })));
  return el("div", {}, el("h4", { text: caption }),
    table(caption, [[label], ["Requests", "num"], ["Tokens", "num"], ["Images", "num"]], body, "No usage yet."));
}

const COLOURS = 6; // the last one stands for every model past the first five
const DAY_MS = 86400000;

// Tokens per day, a stacked bar per day and a colour per model (the most used first), from
// the gateway's sums by model and day. Drawn by hand like the account's chart.
function drawModelChart(rows, models, days) {
  const named = models.slice(0, COLOURS - 1).map((m) => m.model);
  if (models.length > named.length) named.push("other models");
  const colour = (model) => (named.includes(model) ? named.indexOf(model) : named.length - 1);
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  const dates = Array.from({ length: days }, (_, i) => new Date(today - (days - 1 - i) * DAY_MS).toISOString().slice(0, 10));
  const perDay = new Map(dates.map((d) => [d, new Array(named.length).fill(0)]));
  for (const r of rows) {
    const day = perDay.get(r.date);
    if (day) day[colour(r.model)] += r.prompt_tokens + r.completion_tokens;
  }
  const width = Math.max(320, Math.floor($("op-usage-chart").clientWidth) || 720);
  const height = 200;
  const pad = { top: 10, right: 8, bottom: 24, left: 48 };
  const plotH = height - pad.top - pad.bottom;
  const slot = (width - pad.left - pad.right) / days;
  const barW = Math.max(2, Math.min(24, slot * 0.7));
  const top = Math.max(1, ...[...perDay.values()].map((d) => d.reduce((a, b) => a + b, 0)));
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const sum = [...perDay.values()].flat().reduce((a, b) => a + b, 0);
  const label = `Tokens per day by model, ${days} days: ${numbers.format(sum)} in all`;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart-svg" });
  chart.append(svg("title", {}, label),
    svg("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: "grid" }),
    svg("text", { x: pad.left - 6, y: y(top) + 4, class: "axis", "text-anchor": "end" }, numbers.format(top)));
  dates.forEach((date, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    const counts = perDay.get(date);
    const group = svg("g", { class: "day", "data-date": date });
    const parts = named.map((m, c) => `${m} ${numbers.format(counts[c])}`).filter((_, c) => counts[c] > 0);
    group.append(svg("title", {}, `${date}: ${parts.join(", ") || "no tokens"}`));
    let base = 0;
    counts.forEach((v, c) => {
      if (v > 0) group.append(svg("rect", { x, width: barW, y: y(base + v), height: Math.max(1, y(base) - y(base + v)), class: `bar m${c}` }));
      base += v;
    });
    group.append(svg("rect", { x: pad.left + i * slot, width: slot, y: pad.top, height: plotH, class: "hit" }));
    chart.append(group);
    if ((days - 1 - i) % Math.ceil(days / 8) === 0) {
      chart.append(svg("text", { x: x + barW / 2, y: height - 6, class: "axis", "text-anchor": "middle" }, date.slice(5)));
    }
  });
  $("op-usage-chart").replaceChildren(chart);
  $("op-usage-legend").replaceChildren(...named.map((m, c) =>
    el("span", { class: "key" }, el("span", { class: `swatch m${c}`, "aria-hidden": "true" }), m)));
}

// The gateway sums the usage (one row per user, model, day, or model and day), however many
// calls there were.
async function loadUsage() {
  const days = Number($("op-usage-days").value) || 30;
  const by = (field) => api(`/v1/admin/usage?days=${days}&by=${field}`).then((r) => r.data || []);
  try {
    const [users, models, dates, perDay] = await Promise.all(
      [by("user"), by("model"), by("date"), by("date,model")]);
    drawModelChart(perDay, models, days);
    dates.sort((a, b) => (a.date < b.date ? 1 : -1)); // newest first
    $("op-usage-tables").replaceChildren(
      usageTable("By user", "User", "user", users),
      usageTable("By model", "Model", "model", models),
      usageTable("By day", "Day", "date", dates));
  } catch (failure) {
    handle(failure, $("op-usage-error"), "show the usage");
  }
}

// --- the page ------------------------------------------------------------------------------

async function loadAll() {
  await loadPlans(); // first: the user rows pick from the plans
  await Promise.all([loadUsers(), loadKeys(), loadNodes(), loadUsage()]);
}

function remove() {
  const old = $(ROOT);
  if (old) old.remove();
}

function start(me) {
  remove();
  if (!me || !me.admin) return;
  $("app-view").prepend(build());
  loadAll();
}

document.addEventListener("bitinglip:signed-in", (event) => start(event.detail));
document.addEventListener("bitinglip:signed-out", remove);
start(signedIn());
