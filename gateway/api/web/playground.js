// The playground: chat, images, speech and pictures, tried from the page with the
// signed-in user's session token. Every call is an ordinary API call (docs/api.md),
// metered against the plan like any other; answers reach the page as text, never markup.

import { ApiError, bearer, el, explain, handle, show } from "./app.js";

const $ = (id) => document.getElementById(id);
const NODE_HEADER = "X-BitingLip-Node";
// The gateway reads at most 1 MiB of JSON by default: pictures go as JPEG within this side.
const PICTURE_SIDE = 1024;
const SPEECH_TYPES = { wav: "audio/wav", mp3: "audio/mpeg", flac: "audio/flac", opus: "audio/ogg" };

// --- calls ---------------------------------------------------------------------------------

// A call to the API; a refusal becomes an ApiError with the gateway's own sentence.
async function call(path, { json, form, signal } = {}) {
  const headers = { Authorization: `Bearer ${bearer()}` };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method: json === undefined && form === undefined ? "GET" : "POST",
      headers,
      body: json === undefined ? form : JSON.stringify(json),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "Cannot reach the gateway. Check that it is running, then try again.");
  }
  if (response.ok) return response;
  let detail = {};
  try {
    const data = await response.json();
    detail = data && typeof data.error === "object" && data.error ? data.error : {};
  } catch {
    // Not JSON: the status says enough.
  }
  const message = typeof detail.message === "string" && detail.message
    ? detail.message
    : `${response.status} ${response.statusText || "error"}`;
  throw new ApiError(response.status, message, detail.code ?? null, response.headers.get("Retry-After"));
}

// Shows why a call failed where it was made; a call the user stopped is no failure.
function failed(error, where, what) {
  if (error && error.name === "AbortError") return;
  handle(error, where, what);
}

// The server-sent events of a streamed answer, parsed, until ``[DONE]``.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const data = buffer.slice(0, end).split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

// A streamed chat: each text delta goes to ``onText`` as it comes. Ends with who answered,
// the usage and how fast the tokens came.
async function streamChat(body, signal, onText) {
  const response = await call("/v1/chat/completions", {
    json: { ...body, stream: true, stream_options: { include_usage: true } },
    signal,
  });
  const peer = response.headers.get(NODE_HEADER) || "";
  let usage = null;
  let first = 0;
  for await (const event of events(response)) {
    if (event.error) throw new ApiError(502, event.error.message || "the node failed", event.error.code);
    if (event.usage) usage = event.usage;
    const text = event.choices && event.choices[0] && event.choices[0].delta.content;
    if (text) {
      first ||= performance.now();
      onText(text);
    }
  }
  const seconds = first ? (performance.now() - first) / 1000 : 0;
  return { peer, usage, seconds };
}

// "Answered by …abc · 12 tokens · 40 tokens/s": what a finished stream says of itself.
function streamed({ peer, usage, seconds }) {
  const parts = [`Answered by node ${shortPeer(peer)}`];
  if (usage) {
    parts.push(`${usage.completion_tokens} tokens`);
    if (seconds > 0 && usage.completion_tokens > 1) {
      // The first token starts the clock, so it is not counted in the rate.
      parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
    }
  }
  return parts.join(" · ");
}

const shortPeer = (peer) => (peer.length > 16 ? `…${peer.slice(-10)}` : peer || "unknown");

// One call at a time per tab: the buttons follow, and Stop aborts the fetch (the gateway
// then cancels the call on its node).
class Running {
  constructor(go, stop) {
    this.go = go;
    this.stop = stop;
    this.controller = null;
    if (stop) stop.addEventListener("click", () => this.controller && this.controller.abort());
  }

  begin() {
    this.controller = new AbortController();
    this.go.disabled = true;
    if (this.stop) this.stop.disabled = false;
    return this.controller.signal;
  }

  end() {
    this.controller = null;
    this.go.disabled = false;
    if (this.stop) this.stop.disabled = true;
  }
}

// --- models --------------------------------------------------------------------------------

// Fills every model picker with the models some node has ready for its task.
async function loadModels() {
  if (!bearer()) return;
  let listed = [];
  try {
    const reply = await (await call("/v1/models")).json();
    listed = Array.isArray(reply && reply.data) ? reply.data : [];
  } catch (error) {
    failed(error, $("chat-error"), "list the models");
    return;
  }
  for (const select of document.querySelectorAll("#playground select[data-task]")) {
    const ready = listed
      .filter((m) => m.task === select.dataset.task && (m.peers || []).some((p) => p.state === "ready"))
      .map((m) => m.id);
    const chosen = select.value;
    const options = ready.map((id) => el("option", { value: id, text: id }));
    if (!options.length) options.push(el("option", { value: "", text: "No node serves one now" }));
    select.replaceChildren(...options);
    if (ready.includes(chosen)) select.value = chosen;
  }
}

function chosenModel(select, where, what) {
  if (select.value) return select.value;
  show(where, `No node serves ${what} model now. Start a node with one, then try again.`);
  select.focus();
  return null;
}

// A number field's value, or ``undefined`` when empty; a bad one is reported and thrown.
function numberIn(input, where) {
  const text = input.value.trim();
  if (!text) return undefined;
  const value = Number(text);
  const min = input.min === "" ? -Infinity : Number(input.min);
  const max = input.max === "" ? Infinity : Number(input.max);
  const whole = input.step === "1";
  if (!Number.isFinite(value) || value < min || value > max || (whole && !Number.isInteger(value))) {
    const label = document.querySelector(`label[for="${input.id}"]`).textContent;
    const range = max === Infinity ? `at least ${min}` : `from ${min} to ${max}`;
    show(where, `${label} must be ${whole ? "a whole number " : ""}${range}.`);
    input.focus();
    throw new RangeError(label);
  }
  return value;
}

// --- tabs ----------------------------------------------------------------------------------

function tabs() {
  const list = [...document.querySelectorAll('#playground [role="tab"]')];
  const select = (tab, focus) => {
    for (const other of list) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    loadModels();
  };
  // Arrow keys move between tabs, as in every tab list (WAI-ARIA authoring practices).
  const keys = { ArrowRight: 1, ArrowLeft: -1, Home: -Infinity, End: Infinity };
  for (const [i, tab] of list.entries()) {
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (event) => {
      if (!(event.key in keys)) return;
      event.preventDefault();
      const step = keys[event.key];
      const next = Number.isFinite(step) ? (i + step + list.length) % list.length : step < 0 ? 0 : list.length - 1;
      select(list[next], true);
    });
  }
}

// --- chat ----------------------------------------------------------------------------------

let conversation = []; // {role, content}, kept in the page only

function chatBody(extra) {
  const form = $("chat-form");
  const where = $("chat-error");
  const system = form.system.value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...conversation];
  if (extra) messages.push({ role: "user", content: extra });
  return {
    model: form.model.value,
    messages,
    temperature: numberIn(form.temperature, where),
    top_p: numberIn(form.top_p, where),
    max_tokens: numberIn(form.max_tokens, where),
  };
}

function turn(role, text) {
  const body = el("p", { class: "turn-text", text });
  const item = el("li", { class: `turn ${role}` },
    el("span", { class: "turn-role", text: role === "user" ? "You" : "Model" }), body);
  $("chat-log").append(item);
  return body;
}

async function sendChat(event) {
  event.preventDefault();
  const form = $("chat-form");
  const where = $("chat-error");
  const text = form.input.value.trim();
  show(where, "");
  if (!text) {
    show(where, "Write a message first.");
    form.input.focus();
    return;
  }
  if (!chosenModel(form.model, where, "a chat")) return;
  let body;
  try {
    body = chatBody(text);
  } catch {
    return;
  }
  const signal = chatRun.begin();
  turn("user", text);
  const answer = turn("assistant", "");
  answer.parentElement.setAttribute("aria-busy", "true");
  form.input.value = "";
  $("chat-meta").textContent = "Waiting for a node…";
  let said = "";
  try {
    const done = await streamChat(body, signal, (piece) => {
      said += piece;
      answer.textContent = said;
    });
    $("chat-meta").textContent = streamed(done);
  } catch (error) {
    if (error.name === "AbortError") {
      $("chat-meta").textContent = "Stopped: the call was cancelled on its node.";
    } else {
      $("chat-meta").textContent = "";
      failed(error, where, "answer");
    }
  } finally {
    answer.parentElement.removeAttribute("aria-busy");
    chatRun.end();
  }
  // A turn that got no answer is taken back, so the next one does not repeat it.
  if (said) conversation.push({ role: "user", content: text }, { role: "assistant", content: said });
  else {
    answer.parentElement.previousElementSibling.remove();
    answer.parentElement.remove();
    form.input.value ||= text;
  }
}

function clearChat() {
  conversation = [];
  $("chat-log").replaceChildren();
  $("chat-meta").textContent = "";
  show($("chat-error"), "");
  $("chat-input").focus();
}

// --- copy as code ----------------------------------------------------------------------------

// Snippets name the key in an environment variable: the page's own token is never copied.
function curlSnippet(body) {
  const json = JSON.stringify({ ...body, stream: true }, null, 2).replaceAll("'", "'\\''");
  return [
    `curl ${location.origin}/v1/chat/completions \\`,
    '  -H "Authorization: Bearer $BITINGLIP_API_KEY" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d '${json}'`,
  ].join("\n");
}

function pythonSnippet(body) {
  const messages = JSON.stringify(body.messages, null, 4).replaceAll("\n", "\n    ");
  const knobs = ["temperature", "top_p", "max_tokens"]
    .filter((k) => body[k] !== undefined)
    .map((k) => `    ${k}=${body[k]},`);
  return [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${location.origin}/v1", api_key=os.environ["BITINGLIP_API_KEY"])`,
    "stream = client.chat.completions.create(",
    `    model=${JSON.stringify(body.model)},`,
    `    messages=${messages},`,
    ...knobs,
    "    stream=True,",
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    '        print(chunk.choices[0].delta.content or "", end="", flush=True)',
    "print()",
  ].join("\n");
}

async function copyCode(write, button) {
  const where = $("chat-error");
  show(where, "");
  let body;
  try {
    body = chatBody($("chat-input").value.trim() || undefined);
  } catch {
    return;
  }
  const code = write(body);
  $("chat-code").textContent = code;
  $("chat-code-box").hidden = false;
  try {
    await navigator.clipboard.writeText(code);
    button.textContent = `${button.dataset.label} ✓`;
  } catch {
    // No clipboard here (an insecure origin): the code is shown, selected, to copy by hand.
    getSelection().selectAllChildren($("chat-code"));
  }
  setTimeout(() => { button.textContent = button.dataset.label; }, 2000);
}

// --- images --------------------------------------------------------------------------------

async function generateImage(event) {
  event.preventDefault();
  const form = $("image-form");
  const where = $("image-error");
  show(where, "");
  const prompt = form.prompt.value.trim();
  if (!prompt) {
    show(where, "Describe the picture first.");
    form.prompt.focus();
    return;
  }
  const model = chosenModel(form.model, where, "an image");
  if (!model) return;
  let steps;
  let seed;
  try {
    steps = numberIn(form.steps, where);
    seed = numberIn(form.seed, where);
  } catch {
    return;
  }
  const body = {
    model, prompt, size: form.size.value, steps, seed, stream: true,
    negative_prompt: form.negative_prompt.value.trim() || undefined,
  };
  const signal = imageRun.begin();
  const started = performance.now();
  const status = $("image-status");
  const bar = $("image-bar");
  bar.removeAttribute("value"); // indeterminate until the first step
  bar.hidden = false;
  status.textContent = "Waiting for a node…";
  $("image-progress").hidden = false;
  let stopped = false;
  try {
    const response = await call("/v1/images/generations", { json: body, signal });
    const peer = response.headers.get(NODE_HEADER) || "";
    let done = null;
    for await (const event of events(response)) {
      if (event.type === "error") {
        throw new ApiError(502, event.error.message || "the node failed", event.error.code);
      }
      if (event.type === "image_generation.progress") {
        bar.max = event.total_steps;
        bar.value = event.step;
        status.textContent = `Step ${event.step} of ${event.total_steps}`;
      } else if (event.type === "image_generation.completed") {
        done ||= event;
      }
    }
    if (!done) throw new ApiError(502, "the node sent no picture");
    const png = `data:image/png;base64,${done.b64_json}`;
    $("image-out").src = png;
    $("image-out").alt = prompt;
    $("image-download").href = png;
    $("image-download").download = `image-${done.seed ?? "random"}.png`;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("image-meta").textContent = `Seed ${done.seed} · made by node ${shortPeer(peer)} in ${seconds} s · `;
    $("image-result").hidden = false;
  } catch (error) {
    stopped = error.name === "AbortError";
    failed(error, where, "make the picture");
  } finally {
    if (stopped) {
      bar.hidden = true;
      status.textContent = "Stopped: the call was cancelled on its node.";
    } else {
      $("image-progress").hidden = true;
    }
    imageRun.end();
  }
}

// --- speech --------------------------------------------------------------------------------

let speechUrl = "";

async function speak(event) {
  event.preventDefault();
  const form = $("speech-form");
  const where = $("speech-error");
  show(where, "");
  const input = form.input.value.trim();
  if (!input) {
    show(where, "Write what to say first.");
    form.input.focus();
    return;
  }
  const model = chosenModel(form.model, where, "a text-to-speech");
  if (!model) return;
  const format = form.response_format.value;
  const body = { model, input, response_format: format, voice: form.voice.value.trim() || undefined };
  speechRun.begin();
  const started = performance.now();
  try {
    const response = await call("/v1/audio/speech", { json: body });
    const audio = new Blob([await response.arrayBuffer()], { type: SPEECH_TYPES[format] });
    URL.revokeObjectURL(speechUrl);
    speechUrl = URL.createObjectURL(audio);
    $("speech-audio").src = speechUrl;
    $("speech-download").href = speechUrl;
    $("speech-download").download = `speech.${format === "opus" ? "ogg" : format}`;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("speech-meta").textContent =
      `${Math.round(audio.size / 1024)} KiB by node ${shortPeer(response.headers.get(NODE_HEADER) || "")} in ${seconds} s`;
    $("speech-result").hidden = false;
  } catch (error) {
    failed(error, where, "speak");
  } finally {
    speechRun.end();
  }
}

async function transcribe(event) {
  event.preventDefault();
  const form = $("listen-form");
  const where = $("listen-error");
  show(where, "");
  const file = form.file.files[0];
  if (!file) {
    show(where, "Choose an audio file first.");
    form.file.focus();
    return;
  }
  const model = chosenModel(form.model, where, "a speech-to-text");
  if (!model) return;
  const upload = new FormData();
  upload.append("model", model);
  upload.append("file", file, file.name);
  listenRun.begin();
  try {
    const reply = await (await call("/v1/audio/transcriptions", { form: upload })).json();
    $("listen-out").textContent = reply.text.trim() || "(nothing heard)";
    $("listen-out").hidden = false;
  } catch (error) {
    failed(error, where, "write down the speech");
  } finally {
    listenRun.end();
  }
}

// --- vision --------------------------------------------------------------------------------

// The chosen picture as a JPEG data URL no larger than PICTURE_SIDE a side.
async function pictureUrl(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, PICTURE_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff"; // transparency flattened on white, as the gateway does
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas.toDataURL("image/jpeg", 0.9);
}

let picture = "";

async function choosePicture() {
  const file = $("vision-file").files[0];
  const where = $("vision-error");
  show(where, "");
  picture = "";
  $("vision-preview").hidden = true;
  if (!file) return;
  try {
    picture = await pictureUrl(file);
  } catch {
    show(where, `${file.name} is not a picture this browser can read (PNG, JPEG, WebP, GIF).`);
    return;
  }
  $("vision-preview").src = picture;
  $("vision-preview").hidden = false;
}

async function ask(event) {
  event.preventDefault();
  const form = $("vision-form");
  const where = $("vision-error");
  show(where, "");
  if (!picture) {
    show(where, "Choose a picture first.");
    form.file.focus();
    return;
  }
  const model = chosenModel(form.model, where, "an image-to-text");
  if (!model) return;
  const parts = [{ type: "image_url", image_url: { url: picture } }];
  const prompt = form.prompt.value.trim();
  if (prompt) parts.unshift({ type: "text", text: prompt });
  const out = $("vision-out");
  out.textContent = "";
  out.hidden = false;
  $("vision-meta").textContent = "Waiting for a node…";
  const signal = visionRun.begin();
  try {
    const done = await streamChat({ model, messages: [{ role: "user", content: parts }] }, signal,
      (piece) => { out.textContent += piece; });
    $("vision-meta").textContent = streamed(done);
  } catch (error) {
    $("vision-meta").textContent = error.name === "AbortError" ? "Stopped." : "";
    failed(error, where, "look at the picture");
  } finally {
    visionRun.end();
  }
}

// --- the page ------------------------------------------------------------------------------

let chatRun;
let imageRun;
let speechRun;
let listenRun;
let visionRun;

function start() {
  tabs();
  chatRun = new Running($("chat-send"), $("chat-stop"));
  imageRun = new Running($("image-go"), $("image-stop"));
  speechRun = new Running($("speech-go"), null);
  listenRun = new Running($("listen-go"), null);
  visionRun = new Running($("vision-go"), $("vision-stop"));
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
  });
  $("chat-clear").addEventListener("click", clearChat);
  for (const [id, write] of [["chat-curl", curlSnippet], ["chat-python", pythonSnippet]]) {
    const button = $(id);
    button.dataset.label = button.textContent;
    button.addEventListener("click", () => copyCode(write, button));
  }
  $("image-form").addEventListener("submit", generateImage);
  $("speech-form").addEventListener("submit", speak);
  $("listen-form").addEventListener("submit", transcribe);
  $("vision-file").addEventListener("change", choosePicture);
  $("vision-form").addEventListener("submit", ask);
  // The models are listed whenever the signed-in view is shown (app.js shows it).
  new MutationObserver(() => { if (!$("app-view").hidden) loadModels(); })
    .observe($("app-view"), { attributes: true, attributeFilter: ["hidden"] });
  if (!$("app-view").hidden) loadModels();
}

start();
