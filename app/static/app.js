// The Show-1 page: submit a prompt (alone, with keyframe images, or with a clip to upscale), follow the
// job's Server-Sent Events, show the preview and the video.
// The event stream is read with fetch() so the API key travels in the Authorization header, never in a URL.
"use strict";

const STAGE_NAMES = {
  keyframes: "Keyframes",
  interpolation: "Interpolation",
  first_frame_sr: "First frame SR",
  pixel_sr: "Pixel SR",
  latent_sr: "Latent SR",
};
const ACTIVE = new Set(["queued", "running"]);
// Steps of the stages after a draft's: what finishing a draft may change.
const LATER_STEPS = new Set(["sr1_image", "sr1", "sr2"]);
const $ = (id) => document.getElementById(id);

const state = {
  stages: Object.keys(STAGE_NAMES), job: null, follow: null, objectUrls: {},
  // The storyboard: {file, url} per image, in order; refusals per image index (from the API's loc).
  keyframes: [], keyframeErrors: {}, maxKeyframes: 16,
};

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

// A field belongs to the modes its nearest [data-modes] container names (all modes if none).
function applies(element) {
  const holder = element.closest("[data-modes]");
  return !holder || holder.dataset.modes.split(" ").includes(mode());
}

function showMode() {
  for (const element of document.querySelectorAll("[data-modes]")) element.hidden = !applies(element);
  clearInputErrors();
}

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// The key goes only to this origin: a presigned storage URL is its own credential, and a second one
// (or a CORS preflight the bucket does not answer) would make the download fail.
function sameOrigin(url) {
  return new URL(url, location.href).origin === location.origin;
}

async function api(path, options = {}) {
  const extra = options.headers || {};
  const response = await fetch(path, { ...options, headers: sameOrigin(path) ? headers(extra) : extra });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let detail;
    try {
      const body = await response.json();
      detail = body.detail;
      message = Array.isArray(detail)
        ? detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ")
        : detail || message;
    } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(message), { status: response.status, detail });
  }
  return response;
}

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" || !applies($(id)) ? undefined : Number(value);
}

function requestBody() {
  const body = { prompt: $("prompt").value };
  const seed = numberOf("seed");
  if (seed !== undefined) body.seed = seed;
  const keyframes = numberOf("num-keyframes");
  if (keyframes !== undefined) body.num_keyframes = keyframes;
  const kh = numberOf("kf-height"), kw = numberOf("kf-width");
  if (kh !== undefined && kw !== undefined) body.keyframe_size = { height: kh, width: kw };
  const oh = numberOf("out-height"), ow = numberOf("out-width");
  if (oh !== undefined && ow !== undefined) body.output_size = { height: oh, width: ow };
  const steps = {};
  for (const input of document.querySelectorAll("[data-step]")) {
    const value = input.value.trim();
    if (value !== "" && applies(input)) steps[input.dataset.step] = Number(value);
  }
  if (Object.keys(steps).length) body.steps = steps;
  const strength = numberOf("sr2-strength");
  if (strength !== undefined) body.sr2_strength = strength;
  return body;
}

// A storyboard or an upscale goes as multipart/form-data: the files as parts named like the JSON field,
// the other fields bracketed as the API reads them (steps[sr1]=2).
function formBody(body) {
  const form = new FormData();
  const add = (name, value) => {
    if (value !== null && typeof value === "object") {
      for (const [key, inner] of Object.entries(value)) add(`${name}[${key}]`, inner);
    } else {
      form.append(name, String(value));
    }
  };
  for (const [name, value] of Object.entries(body)) add(name, value);
  if (mode() === "storyboard") {
    for (const { file } of state.keyframes) form.append("keyframe_images", file, file.name);
  } else if (mode() === "upscale") {
    const clip = $("clip-file").files[0];
    form.append("input_video", clip, clip.name);
  }
  return form;
}

// What the page can tell before sending: the images or the clip the mode needs.
function missingInput() {
  if (mode() === "storyboard" && state.keyframes.length < 2) {
    return ["keyframe-images-error", "Add at least 2 keyframe images."];
  }
  if (mode() === "upscale" && !$("clip-file").files.length) return ["input-video-error", "Pick a clip."];
  return null;
}

function clearInputErrors() {
  state.keyframeErrors = {};
  $("keyframe-images-error").textContent = $("input-video-error").textContent = "";
  renderKeyframes();
}

// A refusal whose loc names an input (["body", "keyframe_images", 2]) is shown next to that input;
// the rest in the form's error line.
function showRefusal(error) {
  const rest = [];
  for (const item of Array.isArray(error.detail) ? error.detail : []) {
    const [, field, index] = item.loc;
    if (field === "keyframe_images" && Number.isInteger(index) && index < state.keyframes.length) {
      state.keyframeErrors[index] = item.msg;
    } else if (field === "keyframe_images") {
      $("keyframe-images-error").textContent = item.msg;
    } else if (field === "input_video") {
      $("input-video-error").textContent = item.msg;
    } else {
      rest.push(`${item.loc.slice(1).join(".")}: ${item.msg}`);
    }
  }
  renderKeyframes();
  if (rest.length) $("form-error").textContent = rest.join("; ");
  else if (!Array.isArray(error.detail)) $("form-error").textContent = error.message;
}

function addKeyframes(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/") || file.type === "");
  for (const file of images) state.keyframes.push({ file, url: URL.createObjectURL(file) });
  clearInputErrors();
}

function moveKeyframe(from, to) {
  if (to < 0 || to >= state.keyframes.length || from === to) return;
  const [moved] = state.keyframes.splice(from, 1);
  state.keyframes.splice(to, 0, moved);
  clearInputErrors();
}

function removeKeyframe(index) {
  URL.revokeObjectURL(state.keyframes[index].url);
  state.keyframes.splice(index, 1);
  clearInputErrors();
}

function keyframeButton(label, text, onClick, disabled = false) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary small";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.disabled = disabled;
  button.addEventListener("click", onClick);
  return button;
}

function renderKeyframes() {
  const count = state.keyframes.length;
  $("keyframe-list").replaceChildren(...state.keyframes.map(({ file, url }, index) => {
    const item = document.createElement("li");
    item.draggable = true;
    item.dataset.index = index;
    const image = document.createElement("img");
    image.src = url;
    image.alt = `Keyframe ${index + 1}: ${file.name}`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${index + 1}. ${file.name}`;
    const buttons = document.createElement("span");
    buttons.className = "buttons";
    buttons.append(
      keyframeButton(`Move keyframe ${index + 1} up`, "↑", () => moveKeyframe(index, index - 1), index === 0),
      keyframeButton(`Move keyframe ${index + 1} down`, "↓", () => moveKeyframe(index, index + 1),
        index === count - 1),
      keyframeButton(`Remove keyframe ${index + 1}`, "✕", () => removeKeyframe(index)),
    );
    const error = document.createElement("p");
    error.className = "error";
    error.id = `keyframe-error-${index}`;
    error.textContent = state.keyframeErrors[index] || "";
    item.append(image, name, buttons, error);
    if (error.textContent) item.classList.add("refused");
    item.addEventListener("dragstart", (event) => event.dataTransfer.setData("text/x-keyframe", String(index)));
    item.addEventListener("dragover", (event) => {
      if (event.dataTransfer.types.includes("text/x-keyframe")) event.preventDefault();
    });
    item.addEventListener("drop", (event) => {
      const from = event.dataTransfer.getData("text/x-keyframe");
      if (from === "") return;
      event.preventDefault();
      event.stopPropagation();
      moveKeyframe(Number(from), index);
    });
    return item;
  }));
  const frames = count >= 2 ? ` · ${4 * count - 3} frames` : "";
  $("keyframe-hint").textContent =
    `(2 to ${state.maxKeyframes}, in order; each centre-cropped to the keyframe size${frames})`;
}

// What finishing a draft may set: the later stages' fields of the form (the draft fixes the rest).
function finishBody(draftId) {
  const body = { draft_id: draftId };
  const oh = numberOf("out-height"), ow = numberOf("out-width");
  if (oh !== undefined && ow !== undefined) body.output_size = { height: oh, width: ow };
  const steps = {};
  for (const input of document.querySelectorAll("[data-step]")) {
    const value = input.value.trim();
    if (value !== "" && LATER_STEPS.has(input.dataset.step) && applies(input)) {
      steps[input.dataset.step] = Number(value);
    }
  }
  if (Object.keys(steps).length) body.steps = steps;
  return body;
}

// `body` is given when finishing a draft (JSON, no inputs) or making one (the form's fields and inputs).
async function submit(event, body = null, withInputs = true) {
  if (event) event.preventDefault();
  if (body === null && !$("create").reportValidity()) return;
  $("form-error").textContent = "";
  clearInputErrors();
  const missing = withInputs && missingInput();
  if (missing) {
    $(missing[0]).textContent = missing[1];
    return;
  }
  body = body || requestBody();
  // The browser sets a form's Content-Type itself (with its boundary).
  const request = withInputs && mode() !== "text"
    ? { body: formBody(body) }
    : { headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  $("submit").disabled = $("draft").disabled = true;
  try {
    const response = await api("/v1/videos", { method: "POST", ...request });
    follow(await response.json());
    refreshRecent();
    // At phone width the job is below the form: bring it into view, and move focus there so
    // keyboard and screen-reader users land on the status rather than on the button they left.
    $("job").scrollIntoView({ block: "start" });
    $("job-title").focus({ preventScroll: true });
  } catch (error) {
    showRefusal(error);
  } finally {
    $("submit").disabled = $("draft").disabled = false;
  }
}

function submitDraft() {
  if (!$("create").reportValidity()) return;
  submit(null, { ...requestBody(), draft: true });
}

function finishDraft() {
  if (state.job) submit(null, finishBody(state.job.id), false);
}

// One SSE frame per blank line; "event:", "id:" and "data:" fields; ":" lines are keep-alive comments.
function parseFrames(buffer, onEvent) {
  let end;
  while ((end = buffer.indexOf("\n\n")) !== -1) {
    const frame = { event: "message", id: null, data: [] };
    for (const line of buffer.slice(0, end).split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") frame.data.push(value);
      else if (field === "event") frame.event = value;
      else if (field === "id") frame.id = value;
    }
    buffer = buffer.slice(end + 2);
    if (frame.data.length) onEvent(frame.event, frame.id, JSON.parse(frame.data.join("\n")));
  }
  return buffer;
}

// SSE lines may end in CRLF, LF or CR; a CR last in a chunk waits, as its LF may come next.
function normalize(text) {
  const held = text.endsWith("\r") ? "\r" : "";
  return text.slice(0, text.length - held.length).replace(/\r\n?/g, "\n") + held;
}

function follow(job) {
  if (state.follow) state.follow.abort();
  for (const url of Object.values(state.objectUrls)) URL.revokeObjectURL(url);
  state.objectUrls = {};
  state.job = job;
  $("job").hidden = false;
  $("preview-figure").hidden = true;
  $("video-figure").hidden = true;
  render();
  const controller = new AbortController();
  state.follow = controller;
  streamEvents(job.id, controller.signal, null);
}

async function streamEvents(jobId, signal, lastEventId) {
  let finished = false;
  while (!finished && !signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastEventId) extra["Last-Event-ID"] = lastEventId;
      const response = await api(`/v1/videos/${jobId}/events`, { headers: extra, signal });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = parseFrames(normalize(buffer + decoder.decode(value, { stream: true })),
          (event, id, data) => {
            if (id) lastEventId = id;
            if (event === "snapshot" || event === "done") state.job = data;
            else state.job = { ...state.job, ...data };
            render();
            if (event === "status") refreshRecent();
            if (event === "done") {
              finished = true;
              refreshRecent();
            }
          });
      }
    } catch (error) {
      if (signal.aborted) return;
      // A refusal (wrong key, job gone) will not change by retrying; a dropped connection may.
      if (error.status >= 400 && error.status < 500 && error.status !== 429) {
        $("status").textContent = `Cannot follow this job: ${error.message}`;
        return;
      }
      $("status").textContent = `Connection lost (${error.message}); reconnecting`;
    }
    if (!finished && !signal.aborted) await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function formatEta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

function render() {
  const job = state.job;
  if (!job) return;
  $("job-id").textContent = job.id;
  const status = $("status");
  status.className = job.status;
  let text = job.draft ? `draft ${job.status}` : job.status;
  if (job.draft_id) text = `finishing draft ${job.draft_id.slice(0, 8)}… · ${text}`;
  if (job.status === "queued" && job.queue_position !== null && job.queue_position !== undefined) {
    text += ` (position ${job.queue_position + 1})`;
  }
  if (ACTIVE.has(job.status)) {
    text += ` · ${Math.round((job.progress || 0) * 100)}%`;
    const eta = formatEta(job.eta_seconds);
    if (eta) text += ` · ${eta}`;
  }
  if (job.error) text += ` · ${job.error.message}`;
  status.textContent = text;

  const list = $("stages");
  // The bars show the stages the job runs (a draft: up to interpolation; a storyboard: from it; an
  // upscale: the latent stage alone); records from before job_stages existed run them all.
  const stages = job.job_stages && job.job_stages.length ? job.job_stages
    : job.draft ? state.stages.slice(0, state.stages.indexOf("interpolation") + 1) : state.stages;
  list.replaceChildren(...stages.map((stage) => {
    const progress = (job.stage_progress || {})[stage];
    const item = document.createElement("li");
    item.dataset.stage = stage;
    if (job.stage === stage && ACTIVE.has(job.status)) item.classList.add("current");
    const name = document.createElement("span");
    name.className = "name";
    name.id = `stage-${stage}`;
    name.textContent = STAGE_NAMES[stage] || stage;
    const bar = document.createElement("progress");
    bar.setAttribute("aria-labelledby", name.id);
    const done = job.status === "succeeded";
    bar.max = progress ? progress.total : 1;
    bar.value = done ? bar.max : progress ? progress.step : 0;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = progress ? `${done ? progress.total : progress.step}/${progress.total}` : "–";
    item.append(name, bar, count);
    return item;
  }));

  $("cancel").hidden = !ACTIVE.has(job.status);
  $("finish-draft").hidden = !(job.draft && job.status === "succeeded");
  if (job.preview_url && !state.objectUrls.preview) showPreview(job);
  if (job.status === "succeeded" && job.result && !state.objectUrls.video) showVideo(job);
}

// A download still under way when the user opens another job must not land in that job's view.
async function blobUrl(name, url) {
  const urls = state.objectUrls;
  urls[name] = "pending";
  const response = await api(url);
  const objectUrl = URL.createObjectURL(await response.blob());
  if (urls !== state.objectUrls) {
    URL.revokeObjectURL(objectUrl);
    throw Object.assign(new Error("another job is open"), { superseded: true });
  }
  urls[name] = objectUrl;
  return objectUrl;
}

async function showPreview(job) {
  try {
    $("preview").src = await blobUrl("preview", job.preview_url);
    $("preview-figure").hidden = false;
  } catch (error) {
    if (!error.superseded) delete state.objectUrls.preview;
  }
}

async function showVideo(job) {
  try {
    // A presigned URL plays and downloads as it is; an API URL needs the key, so it is fetched.
    const url = sameOrigin(job.result.url) ? await blobUrl("video", job.result.url) : job.result.url;
    state.objectUrls.video = state.objectUrls.video || "external";
    const video = $("video");
    video.src = url;
    $("download").href = url;
    $("download").download = `show1-${job.id}.mp4`;
    $("video-figure").hidden = false;
  } catch (error) {
    if (error.superseded) return;
    delete state.objectUrls.video;
    $("status").textContent += ` · video not loaded: ${error.message}`;
  }
}

async function cancel() {
  if (!state.job) return;
  try {
    await api(`/v1/videos/${state.job.id}`, { method: "DELETE" });
  } catch (error) {
    $("status").textContent += ` · ${error.message}`;
  }
  refreshRecent();
}

async function refreshRecent() {
  try {
    const page = await (await api("/v1/videos?limit=10")).json();
    $("recent").replaceChildren(...page.items.map((job) => {
      const item = document.createElement("li");
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = job.draft ? `draft ${job.status}` : job.status;
      const prompt = document.createElement("span");
      prompt.className = "prompt";
      prompt.textContent = job.params.prompt;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "secondary";
      open.textContent = "Open";
      open.setAttribute("aria-label", `Open video: ${job.params.prompt}`);
      open.addEventListener("click", () => follow(job));
      item.append(badge, prompt, open);
      return item;
    }));
  } catch (error) {
    $("recent").replaceChildren(Object.assign(document.createElement("li"), { textContent: error.message }));
  }
}

async function start() {
  const config = await (await fetch("/ui/config")).json();
  state.stages = config.stages;
  state.maxKeyframes = config.max_keyframes;
  $("key-row").hidden = !config.auth_required;
  $("demo-note").hidden = !config.demo_defaults;
  $("create").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("draft").addEventListener("click", submitDraft);
  $("finish-draft").addEventListener("click", finishDraft);
  $("refresh").addEventListener("click", refreshRecent);
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", showMode);
  $("keyframe-files").addEventListener("change", (event) => {
    addKeyframes(event.target.files);
    event.target.value = "";  // picking the same file again adds it again
  });
  const zone = $("storyboard");
  zone.addEventListener("dragover", (event) => {
    if (event.dataTransfer.types.includes("Files")) {
      event.preventDefault();
      $("drop-zone").classList.add("over");
    }
  });
  zone.addEventListener("dragleave", () => $("drop-zone").classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    $("drop-zone").classList.remove("over");
    if (!event.dataTransfer.files.length) return;
    event.preventDefault();
    addKeyframes(event.dataTransfer.files);
  });
  $("clip-file").addEventListener("change", () => {
    const clip = $("clip-file").files[0];
    $("clip-name").textContent = clip ? `${clip.name} · ${Math.ceil(clip.size / 1024)} KiB` : "";
    clearInputErrors();
  });
  showMode();
  $("api-key").addEventListener("change", refreshRecent);
  if (!config.auth_required) refreshRecent();
}

start();
