// The BitingLip Swarm dashboard: a client of the gateway's own HTTP API (docs/api.md).
// The session token lives in sessionStorage, so it ends with the tab; every piece of
// server data reaches the page through textContent, never as markup.

const PEERS_EVERY_MS = 5000;
const USAGE_EVERY_MS = 60000;
const SESSION = "bitinglip.session";
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// --- the API ----------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, code = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION) || "null");
    return session && typeof session.token === "string" ? session : null;
  } catch {
    return null;
  }
}

let session = loadSession();

// The signed-in user's session token, for the page's other modules (the playground).
export const bearer = () => (session ? session.token : null);

async function api(path, { method = "GET", body, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && session) headers.Authorization = `Bearer ${session.token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "Cannot reach the gateway. Check that it is running, then try again.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && typeof data.error === "object" && data.error ? data.error : {};
    const message = typeof error.message === "string" && error.message
      ? error.message
      : `${response.status} ${response.statusText || "error"}`;
    throw new ApiError(response.status, message, error.code ?? null,
      response.headers.get("Retry-After"));
  }
  return data;
}

const sentence = (text) => (/[.!?]$/.test(text) ? text : `${text}.`);

// "Try again in N s." from a refusal's Retry-After, else ``otherwise``.
function wait(error, otherwise) {
  const seconds = Number(error.retryAfter);
  return Number.isFinite(seconds) && seconds > 0 ? `Try again in ${Math.ceil(seconds)} s.` : otherwise;
}

// What a person should read for a failed call.
export function explain(error, what) {
  if (!(error instanceof ApiError)) return `Could not ${what}: ${error}`;
  switch (error.status) {
    case 0:
      return error.message;
    case 403:
      return `You may not ${what}: ${error.message}`;
    case 404:
      return `This gateway cannot ${what} (${error.message}).`;
    case 429:
      return `Too many requests: ${sentence(error.message)} ${wait(error, "Try again soon.")}`;
    case 503:
      return `No node can ${what} now: ${sentence(error.message)} ${wait(error, "Try again in a moment.")}`;
    default:
      if (error.status >= 500) return `The gateway failed to ${what} (${error.status}): ${error.message}`;
      return `Could not ${what}: ${error.message}`;
  }
}

// --- small DOM helpers -------------------------------------------------------------------

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// A table in a scrolling box, reachable by keyboard so a narrow screen can scroll it: a
// header row of [label, class?], then rows, or one muted line saying there are none.
function table(caption, headers, rows, empty) {
  const head = el("tr", {}, ...headers.map(([label, cls]) => el("th", { scope: "col", class: cls, text: label })));
  const body = rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length, class: "muted", text: empty }))];
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    el("table", {}, el("caption", { class: "sr-only", text: caption }), el("thead", {}, head), el("tbody", {}, ...body)));
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function show(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

let noticeTimer = 0;
function notice(message) {
  show($("notice-text"), message);
  $("notice").hidden = !message;
  clearTimeout(noticeTimer);
  if (message) noticeTimer = setTimeout(() => notice(""), 8000);
}

function stats(node, items) {
  node.replaceChildren(
    ...items.map(([label, value, hint]) =>
      el("div", { class: "stat", title: hint }, el("dt", { text: label }), el("dd", { text: value })),
    ),
  );
}

// --- formatting ----------------------------------------------------------------------------

const numbers = new Intl.NumberFormat();
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const dates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dayLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value === "number") return new Date(value < 1e12 ? value * 1000 : value);
  const parsed = new Date(value);
  return Number.isNaN(parsed.getTime()) ? null : parsed;
}

function when(value, empty = "—") {
  const date = toDate(value);
  return date ? dates.format(date) : empty;
}

function bytes(n) {
  if (!Number.isFinite(n) || n <= 0) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
}

function ago(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 2) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  return `${Math.round(seconds / 60)} min ago`;
}

function humanize(key) {
  const words = String(key).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function shortId(peerId) {
  return peerId.length > 16 ? `…${peerId.slice(-10)}` : peerId;
}

function meter(value, max, label) {
  const bar = el("meter", { min: 0, max: Math.max(1, max), value: Math.min(value, Math.max(1, max)) });
  bar.setAttribute("aria-label", label);
  return bar;
}

// --- the session ---------------------------------------------------------------------------

function setSession(reply, username) {
  session = {
    token: reply.token,
    username: (reply.user && reply.user.username) || username,
    expires_at: reply.expires_at ?? null,
  };
  sessionStorage.setItem(SESSION, JSON.stringify(session));
}

function expired() {
  const end = toDate(session && session.expires_at);
  return end !== null && end.getTime() <= Date.now();
}

function logout(message) {
  session = null;
  profile = null;
  document.dispatchEvent(new CustomEvent("bitinglip:signed-out"));
  sessionStorage.removeItem(SESSION);
  stopPolling();
  render();
  notice(message || "");
}

// Logging out revokes the session token on the gateway too, so a copy of it is worthless;
// the page forgets it whatever the gateway answers.
async function signOut() {
  try {
    await api("/v1/auth/logout", { method: "POST" });
  } catch {
    // Already refused, or the gateway is gone: either way the session ends here.
  }
  logout("You are logged out.");
}

// A refused token ends the session; other failures are shown where they happened.
export function handle(error, where, what) {
  if (error instanceof ApiError && error.status === 401) {
    logout("Your session has ended. Please log in again.");
    return;
  }
  show(where, explain(error, what));
}

async function submitLogin(event) {
  event.preventDefault();
  const action = event.submitter && event.submitter.value === "register" ? "register" : "login";
  const form = $("login-form");
  const username = form.username.value.trim();
  const password = form.password.value;
  const error = $("login-error");
  if (!username || !password) {
    show(error, "Enter a username and a password.");
    (username ? form.password : form.username).focus();
    return;
  }
  show(error, "");
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const reply = await api(`/v1/auth/${action}`, {
      method: "POST",
      body: { username, password },
      auth: false,
    });
    setSession(reply, username);
    form.reset();
    render();
    notice(action === "register" ? `Welcome, ${session.username}! Your account is ready.` : "");
    $("swarm-title").focus();
  } catch (failure) {
    let message = explain(failure, action === "register" ? "create the account" : "log in");
    if (failure instanceof ApiError && failure.status === 401) message = "Wrong username or password.";
    if (failure instanceof ApiError && failure.status === 409) {
      message = "That username is taken. Choose another, or log in.";
    }
    if (failure instanceof ApiError && failure.status === 400) message = failure.message;
    show(error, message);
    form.password.focus();
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

let profile = null;

// The signed-in user's profile (GET /v1/auth/me), or null.
function signedIn() {
  return profile;
}

async function loadMe() {
  try {
    const me = await api("/v1/auth/me");
    // The operator and account views (operator.js, account.js) start from the profile.
    profile = me;
    document.dispatchEvent(new CustomEvent("bitinglip:signed-in", { detail: me }));
    const plan = me && me.plan && (me.plan.name || me.plan.id);
    $("account-plan").textContent = plan ? String(plan) : "";
    $("account-plan").hidden = !plan;
    if (me && me.disabled) notice("This account is disabled: API calls will be refused.");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handle(error, $("swarm-error"), "");
  }
}

// --- the swarm -----------------------------------------------------------------------------

let peersTimer = 0;
let usageTimer = 0;

function stopPolling() {
  clearTimeout(peersTimer);
  clearTimeout(usageTimer);
  peersTimer = 0;
  usageTimer = 0;
}

function peerRow(peer) {
  const hw = peer.hardware;
  const load = peer.load;
  const models = (peer.models || []).map((m) =>
    el("span", { class: `chip state-${m.state}`, title: [m.task, m.dtype].filter(Boolean).join(", ") },
      `${m.id} `, el("small", { text: m.state })),
  );
  // The record says what the memory is: VRAM on a GPU, RAM on a CPU host, unified on Apple.
  const kind = (hw && hw.memory) || "memory";
  const memory = hw && hw.memory_total > 0
    ? el("div", { class: "stack" },
        meter(hw.memory_total - hw.memory_free, hw.memory_total, `${kind} in use`),
        el("small", { text: `${bytes(hw.memory_free)} free of ${bytes(hw.memory_total)} ${kind}` }))
    : el("span", { class: "muted", text: hw ? `${kind} not reported` : "—" });
  const busy = load
    ? el("div", { class: "stack" },
        meter(load.inflight, load.capacity, "slots in use"),
        el("small", { text: `${load.inflight}/${load.capacity} running · ${load.queued} queued` }))
    : el("span", { class: "muted", text: "—" });
  let health = ["ok", "healthy"];
  if (load && load.draining) health = ["warn", "draining"];
  else if (!peer.healthy) health = ["bad", "not responding"];
  const seen = peer.role === "gateway" ? "" : ago(peer.last_seen);
  return el("tr", { "data-peer-id": peer.peer_id },
    el("td", {}, el("code", { title: peer.peer_id, text: shortId(peer.peer_id) }),
      peer.version ? el("small", { class: "muted block", text: `v${peer.version}` }) : null),
    el("td", { text: peer.role }),
    el("td", {}, ...(models.length ? models : [el("span", { class: "muted", text: "—" })])),
    el("td", { text: hw ? `${hw.device_name || hw.backend} (${hw.backend})` : "—" }),
    el("td", {}, memory),
    el("td", {}, busy),
    el("td", { class: "num", text: load ? `${numbers.format(load.tokens_per_s)} tok/s` : "—" }),
    el("td", {}, el("span", { class: `badge ${health[0]}`, text: health[1] }),
      seen ? el("small", { class: "muted block", text: seen }) : null),
  );
}

function renderPeers(peers) {
  const nodes = peers.filter((p) => p.role === "node");
  const healthy = nodes.filter((p) => p.healthy && !(p.load && p.load.draining));
  const models = new Set(nodes.flatMap((p) => (p.models || []).filter((m) => m.state === "ready").map((m) => m.id)));
  const sum = (f) => nodes.reduce((total, p) => total + (p.load ? f(p.load) : 0), 0);
  stats($("swarm-stats"), [
    ["Nodes", `${healthy.length} / ${nodes.length}`, "healthy nodes / nodes known"],
    ["Gateways", String(peers.filter((p) => p.role === "gateway").length)],
    ["Models ready", String(models.size), [...models].sort().join(", ")],
    ["Running", `${sum((l) => l.inflight)} / ${sum((l) => l.capacity)}`, "calls running / slots"],
    ["Queued", String(sum((l) => l.queued))],
    ["Speed", `${numbers.format(Math.round(sum((l) => l.tokens_per_s)))} tok/s`],
  ]);
  const rows = peers.map(peerRow);
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No peers yet: start a node." })));
  }
  $("peers").tBodies[0].replaceChildren(...rows);
}

async function loadPeers() {
  if (!session) return;
  try {
    const reply = await api("/v1/peers");
    renderPeers(Array.isArray(reply && reply.data) ? reply.data : []);
    show($("swarm-error"), "");
    $("swarm-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    handle(error, $("swarm-error"), "list the peers");
  }
  if (session && !document.hidden) {
    clearTimeout(peersTimer);
    peersTimer = setTimeout(loadPeers, PEERS_EVERY_MS);
  }
}

// --- usage ---------------------------------------------------------------------------------

const SERIES = {
  tokens: [["prompt_tokens", "Prompt tokens"], ["completion_tokens", "Completion tokens"]],
  requests: [["requests", "Requests"]],
  images: [["images", "Images"]],
  audio: [["audio_seconds", "Seconds of audio"]],
};

const emptyDay = () => ({ requests: 0, prompt_tokens: 0, completion_tokens: 0, images: 0, audio_seconds: 0 });

function daily(rows, span) {
  const byDate = new Map();
  const today = new Date();
  for (let i = span - 1; i >= 0; i -= 1) {
    const day = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    byDate.set(day.toISOString().slice(0, 10), emptyDay());
  }
  for (const row of rows) {
    const key = String(row.date || "").slice(0, 10);
    if (!byDate.has(key)) byDate.set(key, emptyDay());
    const day = byDate.get(key);
    for (const field of Object.keys(day)) day[field] += Number(row[field]) || 0;
  }
  return [...byDate.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

// A stacked bar per day, drawn by hand: no library, nothing fetched.
// Drawn at the box's own pixel width, so that text keeps its size whatever the screen.
function drawChart(perDay, metric) {
  const series = SERIES[metric];
  const box = $("usage-chart");
  const width = Math.max(320, Math.floor(box.clientWidth) || 720);
  const height = 220;
  const pad = { top: 12, right: 8, bottom: 26, left: 48 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = perDay.map(([, d]) => series.reduce((t, [f]) => t + d[f], 0));
  const top = niceMax(Math.max(0, ...totals));
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const slot = plotW / Math.max(1, perDay.length);
  const barW = Math.max(2, Math.min(28, slot * 0.7));
  const sum = totals.reduce((a, b) => a + b, 0);
  const label = `${SERIES[metric].map(([, l]) => l).join(" and ")} per day, ${perDay.length} days: ${numbers.format(sum)} in all`;
  const chart = svg("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart-svg",
  });
  chart.append(svg("title", {}, label));
  for (const fraction of [0, 0.5, 1]) {
    const v = top * fraction;
    if (!Number.isInteger(v)) continue; // counts are whole: no "0.5 requests"
    chart.append(
      svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, compact.format(v)),
    );
  }
  // Labels every few days, counted back from today so that today always has one.
  const every = Math.ceil(perDay.length / Math.max(2, Math.floor(plotW / 70)));
  perDay.forEach(([date, day], i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    let base = 0;
    const group = svg("g", { class: "day" });
    const parts = series.map(([f, l]) => `${numbers.format(day[f])} ${l.toLowerCase()}`);
    group.append(svg("title", {}, `${date}: ${parts.join(", ")}`));
    series.forEach(([field], s) => {
      const v = day[field];
      if (v > 0) {
        group.append(svg("rect", { x, width: barW, y: y(base + v), height: Math.max(1, y(base) - y(base + v)), class: `bar s${s}` }));
      }
      base += v;
    });
    // An invisible full-height target, so hovering an empty day still says what it was.
    group.append(svg("rect", { x: pad.left + i * slot, width: slot, y: pad.top, height: plotH, class: "hit" }));
    chart.append(group);
    if ((perDay.length - 1 - i) % every === 0) {
      const d = new Date(`${date}T00:00:00Z`);
      chart.append(svg("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle" },
        Number.isNaN(d.getTime()) ? date : dayLabel.format(d)));
    }
  });
  box.replaceChildren(chart);
  chartWidth = width;
  const keys = series.map(([, l], s) =>
    el("span", { class: "key" }, el("span", { class: `swatch s${s}`, "aria-hidden": "true" }), l));
  if (sum === 0) keys.push(el("span", { class: "muted", text: "No usage in this period yet." }));
  $("usage-legend").replaceChildren(...keys);
}

let chartWidth = 0;

function redrawChart() {
  drawChart(daily(usageRows, Number($("usage-days").value) || 30), $("usage-metric").value);
}

let usageRows = [];

function renderUsage(reply, span) {
  usageRows = Array.isArray(reply && reply.data) ? reply.data : [];
  const totals = (reply && reply.totals) || {};
  const count = (f) => Number(totals[f] ?? usageRows.reduce((t, r) => t + (Number(r[f]) || 0), 0));
  stats($("usage-totals"), [
    ["Requests", numbers.format(count("requests"))],
    ["Prompt tokens", numbers.format(count("prompt_tokens"))],
    ["Completion tokens", numbers.format(count("completion_tokens"))],
    ["Images", numbers.format(count("images"))],
    ["Seconds of audio", numbers.format(count("audio_seconds"))],
  ]);
  drawChart(daily(usageRows, span), $("usage-metric").value);
  renderLimits(reply && typeof reply.limits === "object" && reply.limits ? reply.limits : {});
}

// What the plan allows next to what is used of it now; other fields are listed as they come.
const QUOTAS = [
  ["requests_this_minute", "requests_per_minute", "Requests this minute"],
  ["tokens_today", "tokens_per_day", "Tokens today"],
  ["images_today", "images_per_day", "Images today"],
  ["audio_seconds_today", "audio_seconds_per_day", "Seconds of audio today"],
  ["inflight", "concurrent", "Calls running at once"],
];

function renderLimits(limits) {
  const shown = new Set(["name"]);
  const items = [];
  for (const [used, limit, label] of QUOTAS) {
    if (!(limit in limits)) continue;
    shown.add(used).add(limit);
    const max = Number(limits[limit]);
    const now = Number(limits[used]) || 0;
    items.push(el("div", { class: "quota" },
      el("dt", { text: label }),
      el("dd", {}, meter(now, max, label),
        el("span", { text: `${numbers.format(now)} of ${numbers.format(max)}` }))));
  }
  for (const [key, value] of Object.entries(limits)) {
    if (shown.has(key)) continue;
    const text = value === null ? "unlimited" : typeof value === "object" ? JSON.stringify(value) : String(value);
    items.push(el("div", { class: "quota" }, el("dt", { text: humanize(key) }), el("dd", { text })));
  }
  const title = limits.name ? `Your plan: ${limits.name}` : "Your limits";
  $("usage-limits").replaceChildren(
    ...(items.length ? [el("h3", { text: title }), el("dl", { class: "quotas" }, ...items)] : []),
  );
}

async function loadUsage() {
  if (!session) return;
  const span = Number($("usage-days").value) || 30;
  try {
    renderUsage(await api(`/v1/usage?days=${span}`), span);
    show($("usage-error"), "");
  } catch (error) {
    handle(error, $("usage-error"), "show your usage");
  }
  if (session) {
    clearTimeout(usageTimer);
    usageTimer = setTimeout(loadUsage, USAGE_EVERY_MS);
  }
}

// --- API keys ------------------------------------------------------------------------------

function keyState(key) {
  if (key.revoked) return ["bad", "revoked"];
  const end = toDate(key.expires_at);
  if (end && end.getTime() <= Date.now()) return ["warn", "expired"];
  return ["ok", "active"];
}

function keyRow(key) {
  const [kind, state] = keyState(key);
  const revoke = state === "active"
    ? el("button", { type: "button", class: "danger small", onclick: () => revokeKey(key), text: "Revoke" })
    : null;
  if (revoke) revoke.setAttribute("aria-label", `Revoke key ${key.name}`);
  return el("tr", { "data-key-id": key.id },
    el("td", { text: key.name }),
    el("td", {}, el("code", { text: String(key.id) })),
    el("td", { text: when(key.created) }),
    el("td", { text: when(key.expires_at, "never") }),
    el("td", {}, el("span", { class: `badge ${kind}`, text: state })),
    el("td", { class: "num" }, revoke),
  );
}

async function loadKeys() {
  if (!session) return;
  try {
    const reply = await api("/v1/keys");
    const keys = Array.isArray(reply && reply.data) ? reply.data : [];
    const rows = keys.map(keyRow);
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No API keys yet." })));
    $("keys-table").tBodies[0].replaceChildren(...rows);
    show($("keys-error"), "");
  } catch (error) {
    handle(error, $("keys-error"), "list your API keys");
  }
}

async function createKey(event) {
  event.preventDefault();
  const form = $("key-form");
  const name = form.name.value.trim();
  const ttl = form.ttl_days.value.trim();
  if (!name) {
    show($("keys-error"), "Give the key a name, so you know later where it is used.");
    form.name.focus();
    return;
  }
  const body = { name };
  if (ttl) {
    const n = Number(ttl);
    if (!Number.isInteger(n) || n < 1) {
      show($("keys-error"), "Expiry must be a whole number of days from 1 to 3650 (empty: 365).");
      form.ttl_days.focus();
      return;
    }
    body.ttl_days = n;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const reply = await api("/v1/keys", { method: "POST", body });
    show($("keys-error"), "");
    form.reset();
    $("new-key-name").textContent = `“${reply.name || name}”`;
    $("new-key-value").textContent = reply.key;
    $("new-key-copy").textContent = "Copy";
    $("new-key").hidden = false;
    $("new-key").focus();
    await loadKeys();
  } catch (error) {
    handle(error, $("keys-error"), "create the key");
  } finally {
    button.disabled = false;
  }
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke the key “${key.name}”? Programs using it will stop working.`)) return;
  try {
    await api(`/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
    show($("keys-error"), "");
    notice(`Key “${key.name}” revoked.`);
    await loadKeys();
  } catch (error) {
    handle(error, $("keys-error"), "revoke the key");
  }
}

async function copyKey() {
  const value = $("new-key-value").textContent;
  try {
    await navigator.clipboard.writeText(value);
    $("new-key-copy").textContent = "Copied";
  } catch {
    // No clipboard outside secure contexts: select the text for a manual copy instead.
    const range = document.createRange();
    range.selectNodeContents($("new-key-value"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("new-key-copy").textContent = "Press Ctrl+C";
  }
}

function hideNewKey() {
  $("new-key").hidden = true;
  $("new-key-value").textContent = "";
}

// --- the page ------------------------------------------------------------------------------

function render() {
  const signedIn = Boolean(session) && !expired();
  $("login-view").hidden = signedIn;
  $("app-view").hidden = !signedIn;
  $("account").hidden = !signedIn;
  if (!signedIn) {
    hideNewKey();
    $("username").focus();
    return;
  }
  $("account-name").textContent = session.username || "";
  loadMe();
  loadPeers();
  loadUsage();
  loadKeys();
}

function start() {
  $("login-form").addEventListener("submit", submitLogin);
  $("logout").addEventListener("click", signOut);
  $("notice-close").addEventListener("click", () => notice(""));
  $("key-form").addEventListener("submit", createKey);
  $("new-key-copy").addEventListener("click", copyKey);
  $("new-key-done").addEventListener("click", hideNewKey);
  $("usage-days").addEventListener("change", loadUsage);
  $("usage-metric").addEventListener("change", redrawChart);
  new ResizeObserver(() => {
    const width = Math.floor($("usage-chart").clientWidth);
    if (width && Math.abs(width - chartWidth) > 1 && !$("app-view").hidden) redrawChart();
  }).observe($("usage-chart"));
  $("usage-form").addEventListener("submit", (event) => event.preventDefault());
  // Polling pauses in a hidden tab and catches up when it is shown again.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && session) loadPeers();
  });
  if (session && expired()) logout("Your session has ended. Please log in again.");
  else render();
}

start();

export { api, logout, meter, notice, numbers, shortId, signedIn, svg, table, when };
