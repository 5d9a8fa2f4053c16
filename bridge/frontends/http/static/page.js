// turbo-bridge live page: every edit goes out over the WebSocket, frames come back as binary
// messages. The frame header (little-endian; docs/reference/http.md, "WebSocket"):
//   0 magic "TBW1" | 4 u16 header size | 6 u8 format (0 rgba, 1 png, 2 jpeg) | 7 u8 reserved
//   8 u64 seq | 16 u64 params version | 24 u32 width | 28 u32 height | 32 f32 render ms
//   36 u32 payload bytes | then the payload, at header size.
"use strict";

const FORMATS = ["rgba", "png", "jpeg"];
const MIME = { png: "image/png", jpeg: "image/jpeg" };
const FIELDS = ["prompt", "negative_prompt", "seed", "guidance", "steps", "width", "height"];
const COMMIT_ON_CHANGE = new Set(["width", "height"]);  // sizes are sent when complete, not per digit
const STRIP_LENGTH = 8;
const THUMB_PX = 144;

const $ = (id) => document.getElementById(id);
const canvas = $("frame");
const context = canvas.getContext("2d");

let socket = null;
let retryMs = 250;
const awaitingReply = [];         // our messages without a reply yet, oldest first
let ackedVersion = 0;             // the newest params version a reply of ours reported
const changeSentAt = new Map();   // params version -> when the edit that made it was sent
const paramsOf = new Map();       // params version -> params, for the frames that follow
let shownSeq = 0;
const arrivals = [];              // arrival times of the last second's frames

// Seeds reach 2**64-1, beyond a JS number's exact range: keep them as decimal strings.
function parse(text) {
  return JSON.parse(text, (key, value, source) =>
    (key === "seed" || key === "seed2") && typeof value === "number" && source && source.source ? source.source : value);
}

// A daemon started with --token: open the page as http://HOST:PORT/#token=TOKEN. The fragment never
// leaves the browser; the WebSocket carries the token as ?access_token= (browsers cannot set its headers).
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");
const AUTH = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

// Channels: the page shows one; "main" is the unprefixed API, NAME is /v1/channels/NAME/...
const CHANNEL_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;
let channel = "main";
const channelPath = (path) => (channel === "main" ? `/v1/${path}` : `/v1/channels/${channel}/${path}`);

async function listChannels() {
  const response = await fetch("/v1/channels", { headers: AUTH });
  if (!response.ok) return;
  const names = Object.keys((await response.json()).channels);
  $("channels").replaceChildren(...names.map((name) => Object.assign(document.createElement("option"), { value: name })));
}

async function pickChannel(name) {
  if (!CHANNEL_NAME.test(name)) { showError({ field: "channel", message: `not a channel name: ${name}` }); return; }
  // An empty change creates a channel that does not exist yet (the daemon's initial parameters).
  const response = await fetch(`/v1/channels/${name}/params`, {
    method: "PATCH", headers: { ...AUTH, "Content-Type": "application/json" }, body: "{}" });
  if (!response.ok) { showError((await response.json()).error); $("channel").value = channel; return; }
  channel = name;
  $("channel").value = name;
  shownSeq = 0; ackedVersion = 0; changeSentAt.clear(); paramsOf.clear(); unsent = {};
  if (socket) { socket.onclose = null; socket.close(); }
  connect();
  listChannels();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = TOKEN ? `&access_token=${encodeURIComponent(TOKEN)}` : "";
  socket = new WebSocket(`${scheme}://${location.host}${channelPath("ws")}?format=${$("format").value}${token}`);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    retryMs = 250; awaitingReply.length = 0; $("link").textContent = "live";
    if (Object.keys(unsent).length) { const params = unsent; unsent = {}; send({ params }); }
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onText(parse(event.data));
    else onFrame(event.data).catch((error) => showError({ field: null, message: `frame: ${error}` }));
  };
  socket.onclose = () => {
    $("link").textContent = "reconnecting";
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  };
}

let unsent = {};  // parameters edited while the socket (re)connects: sent once it is open

function send(message) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    if (message.params) Object.assign(unsent, message.params);
    return;
  }
  socket.send(JSON.stringify(message));
  awaitingReply.push({ at: performance.now(), isChange: "params" in message });
}

function onText(message) {
  if (message.type === "deleted") {
    showError({ field: "channel", message: `channel ${message.channel} was deleted; back to main` });
    pickChannel("main");
  } else if (message.type === "hello") {
    setControls(message.params);
    $("format").value = message.format;
  } else if (message.type === "applied") {
    const sent = awaitingReply.shift();
    if (sent && sent.isChange && message.version > ackedVersion) changeSentAt.set(message.version, sent.at);
    ackedVersion = Math.max(ackedVersion, message.version);
    showError(null);
    $("warning").hidden = message.warnings.length === 0;
    $("warning").textContent = message.warnings.join(" ");
  } else if (message.type === "error") {
    awaitingReply.shift();
    showError(message.error);
  } else if (message.type === "params") {
    paramsOf.set(message.version, message.params);
    for (const version of paramsOf.keys()) if (paramsOf.size > 32) paramsOf.delete(version);
    // Follow the daemon (other tools change it too), but never undo edits still on their way.
    if (awaitingReply.length === 0 && message.version >= ackedVersion) setControls(message.params);
  }
}

async function onFrame(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (magic !== "TBW1") throw new Error(`unexpected magic ${JSON.stringify(magic)}`);
  const headerSize = view.getUint16(4, true);
  const format = FORMATS[view.getUint8(6)];
  const seq = Number(view.getBigUint64(8, true));
  const version = Number(view.getBigUint64(16, true));
  const width = view.getUint32(24, true);
  const height = view.getUint32(28, true);
  const renderMs = view.getFloat32(32, true);
  const payload = new Uint8Array(buffer, headerSize, view.getUint32(36, true));
  const bitmap = format === "rgba"
    ? await createImageBitmap(new ImageData(new Uint8ClampedArray(payload.buffer, headerSize, payload.length), width, height))
    : await createImageBitmap(new Blob([payload], { type: MIME[format] }));
  if (seq < shownSeq) { bitmap.close(); return; }  // a newer frame was drawn while this one decoded
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  context.drawImage(bitmap, 0, 0);
  const now = performance.now();
  shownSeq = seq;
  Object.assign(canvas.dataset, { seq, version, format, width, height });

  let editAt = null;  // the newest edit this frame shows
  for (const [changed, at] of changeSentAt) if (changed <= version) { editAt = at; changeSentAt.delete(changed); }
  if (editAt !== null) $("latency").textContent = `${Math.round(now - editAt)} ms`;
  arrivals.push(now);
  $("render-ms").textContent = `${renderMs.toFixed(1)} ms`;
  $("seq").textContent = `#${seq} ${format}`;
  $("version").textContent = `v${version}`;
  const params = paramsOf.get(version);
  $("shown-params").textContent = params ? describe(params) : "";
  addToStrip(bitmap, version, params);
  bitmap.close();
}

function addToStrip(bitmap, version, params) {
  const strip = $("strip");
  if (!params || (strip.firstElementChild && strip.firstElementChild.dataset.version === String(version))) return;
  const item = document.createElement("li");
  item.dataset.version = version;
  const button = document.createElement("button");
  button.type = "button";
  button.title = describe(params);
  const thumb = document.createElement("canvas");
  const scale = Math.min(1, THUMB_PX / Math.max(bitmap.width, bitmap.height));
  thumb.width = Math.max(1, Math.round(bitmap.width * scale));
  thumb.height = Math.max(1, Math.round(bitmap.height * scale));
  thumb.getContext("2d").drawImage(bitmap, 0, 0, thumb.width, thumb.height);
  button.append(thumb);
  button.addEventListener("click", () => { setControls(params, true); send({ params }); });
  item.append(button);
  strip.prepend(item);
  while (strip.children.length > STRIP_LENGTH) strip.lastElementChild.remove();
}

function describe(p) {
  return `seed ${p.seed} · ${p.width}×${p.height} · ${p.steps} step${p.steps === 1 ? "" : "s"} · ` +
    `guidance ${p.guidance} · ${JSON.stringify(p.prompt)}`;
}

function setControlScale(params) {
  // The slider follows the daemon unless it is being dragged.
  const name = $("control-name").value;
  if (!name || $("control-scale") === document.activeElement) return;
  const scale = String((params.controls && params.controls[name] && params.controls[name].scale) || 0);
  $("control-scale").value = scale;
  $("control-scale-shown").textContent = scale;
}

async function putImage(path, file) {
  const response = await fetch(channelPath(path), {
    method: "PUT", headers: { ...AUTH, "Content-Type": file.type || "application/octet-stream" }, body: file });
  const body = await response.json();
  showError(response.ok ? null : body.error);
}

async function putControl(file) {
  const name = $("control-name").value;
  if (name && file) await putImage(`control/${encodeURIComponent(name)}`, file);
}

async function putStyle(file) {
  if (file) await putImage("style", file);
}

function setStyleScale(params) {
  // Like the ControlNet slider: it follows the daemon unless it is being dragged.
  if (params.style_scale === undefined || $("style-scale") === document.activeElement) return;
  $("style-scale").value = String(params.style_scale);
  $("style-scale-shown").textContent = String(params.style_scale);
}

function setControls(params, all = false) {
  setLoraSliders(params.loras || {});
  setControlScale(params);
  setStyleScale(params);
  for (const field of FIELDS) {
    const input = $(field);
    // A prompt blend ([[text, weight], ...], set over REST/OSC) shows as JSON; typing replaces it.
    const value = typeof params[field] === "object" ? JSON.stringify(params[field]) : String(params[field]);
    if (!all && COMMIT_ON_CHANGE.has(field) && input === document.activeElement) continue;
    if (field === "guidance" ? Number(input.value) !== params.guidance || input.value === "" : input.value !== value) {
      input.value = value;
    }
  }
  if (params.tiling !== undefined) setTiling(params.tiling);
}

function setTiling(tiling) {
  // Seamless sends "xy"; a daemon set to one axis (x or y) over REST/OSC shows as indeterminate.
  $("seamless").checked = tiling !== "none";
  $("seamless").indeterminate = tiling === "x" || tiling === "y";
}

function showRecord(state) {
  const button = $("record");
  button.disabled = !state.available;
  button.title = state.available ? `into ${state.dir}` : "start the daemon with --output-dir to record";
  button.setAttribute("aria-pressed", String(state.recording));
  button.textContent = state.recording ? "Stop recording" : "Record";
  const last = state.files.length ? ` · last file ${state.files[state.files.length - 1]}` : "";
  $("record-state").textContent = state.recording
    ? `recording ${state.file || ""} · ${state.frames} frames${state.dropped ? `, ${state.dropped} dropped` : ""}`
    : (state.error ? state.error : last.slice(3));
}

async function record(body) {
  const options = body ? { method: "POST", headers: { ...AUTH, "Content-Type": "application/json" },
    body: JSON.stringify(body) } : { headers: AUTH };
  const response = await fetch("/v1/record", options);
  const reply = await response.json();
  if (!response.ok) { showError(reply.error); return; }
  showRecord(reply);
}

function showError(error) {
  for (const field of FIELDS) $(field).removeAttribute("aria-invalid");
  $("error").hidden = !error;
  if (!error) return;
  $("error").textContent = error.field ? `${error.field}: ${error.message}` : error.message;
  if (FIELDS.includes(error.field)) $(error.field).setAttribute("aria-invalid", "true");
}

function number(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

$("controls").addEventListener("submit", (event) => event.preventDefault());
for (const field of ["prompt", "negative_prompt"]) {
  $(field).addEventListener("input", () => send({ params: { [field]: $(field).value } }));
}

// One slider per LoRA file (GET /v1/loras); moving one sends only that LoRA's weight.
function setLoraSliders(active) {
  for (const slider of document.querySelectorAll("#loras input[type=range]")) {
    if (slider === document.activeElement) continue;
    slider.value = String(active[slider.dataset.name] ?? 0);
    slider.nextElementSibling.value = Number(slider.value).toFixed(2);
  }
}

function showLoras(listing) {
  const box = $("loras");
  for (const file of listing.loras) {
    if (file.error) continue;
    const label = document.createElement("label");
    label.title = `${file.targets.join(", ")} · rank ${file.rank} · ${(file.size / 1e6).toFixed(1)} MB`;
    const name = document.createElement("span");
    name.textContent = file.name;
    const slider = Object.assign(document.createElement("input"),
      { type: "range", min: "-2", max: "2", step: "0.05", value: "0" });
    slider.dataset.name = file.name;
    const shown = document.createElement("output");
    slider.addEventListener("input", () => {
      shown.value = Number(slider.value).toFixed(2);
      send({ params: { loras: { [file.name]: Number(slider.value) } } });
    });
    label.append(name, slider, shown);
    box.append(label);
  }
  $("no-loras").hidden = box.querySelector("input") !== null;
  setLoraSliders(listing.active);
}
$("seed").addEventListener("input", () => send({ params: { seed: $("seed").value.trim() } }));
for (const field of ["guidance", "steps", "width", "height"]) {
  const input = $(field);
  input.addEventListener(COMMIT_ON_CHANGE.has(field) ? "change" : "input",
    () => send({ params: { [field]: number(input) } }));
}
$("new-seed").addEventListener("click", () => {
  $("seed").value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
  send({ params: { seed: $("seed").value } });
});
$("format").addEventListener("change", () => send({ format: $("format").value }));
$("channel").addEventListener("change", () => pickChannel($("channel").value.trim()));
$("channel").addEventListener("focus", () => listChannels().catch(() => {}));
$("seamless").addEventListener("change", () => send({ params: { tiling: $("seamless").checked ? "xy" : "none" } }));
$("record").addEventListener("click", () => {
  record({ action: $("record").getAttribute("aria-pressed") === "true" ? "stop" : "start" })
    .catch((error) => showError({ field: null, message: `record: ${error}` }));
});
setInterval(() => record().catch(() => {}), 1000);  // recording state: frames, files, errors
$("control-file").addEventListener("change", () => putControl($("control-file").files[0]));
$("control-scale").addEventListener("input", () => {
  $("control-scale-shown").textContent = $("control-scale").value;
  send({ params: { controls: { [$("control-name").value]: { scale: Number($("control-scale").value) } } } });
});
function dropTarget(box, put) {
  // An image dropped on the box is PUT (control and style images).
  box.addEventListener("dragover", (event) => { event.preventDefault(); box.classList.add("dragging"); });
  box.addEventListener("dragleave", () => box.classList.remove("dragging"));
  box.addEventListener("drop", (event) => {
    event.preventDefault();
    box.classList.remove("dragging");
    put(event.dataTransfer.files[0]);
  });
}
dropTarget($("control"), putControl);
$("style-file").addEventListener("change", () => putStyle($("style-file").files[0]));
$("style-scale").addEventListener("input", () => {
  $("style-scale-shown").textContent = $("style-scale").value;
  send({ params: { style_scale: Number($("style-scale").value) } });
});
dropTarget($("style"), putStyle);

setInterval(() => {
  const now = performance.now();
  while (arrivals.length && arrivals[0] < now - 1000) arrivals.shift();
  $("fps").textContent = String(arrivals.length);
}, 250);

fetch("/v1/loras", { headers: AUTH }).then((response) => response.json()).then(showLoras)
  .catch((error) => showError({ field: null, message: `loras: ${error}` }));

fetch("/v1/schema", { headers: AUTH }).then((response) => response.json()).then((schema) => {
  for (const field of ["width", "height"]) $(field).max = schema.parameters[field].maximum;
  const names = Object.keys(schema.parameters.controls.properties);  // the loaded ControlNets
  for (const name of names) $("control-name").append(new Option(name, name));
  $("control").hidden = names.length === 0;
  $("style").hidden = !(schema.parameters.style_scale && schema.parameters.style_scale.maximum > 0);  // --ip-adapter
}).catch((error) => showError({ field: null, message: `schema: ${error}` }));

connect();
listChannels().catch((error) => showError({ field: null, message: `channels: ${error}` }));
