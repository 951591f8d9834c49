// slapp labeling page: shows one ROI at a time and sends the labeler's answer.
// Plain JavaScript, no library; every text from the server is set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const SCALE = 3;  // canvas pixels per crop pixel (128 x 128 crops on 384 x 384 canvases)

const state = {
  task: null,          // the task shown (from /api/next or /api/tasks/<id>)
  shownAt: 0,          // performance.now() when it appeared
  requestId: null,     // the id of this answer; a retry sends the same one
  images: {},          // background name -> loaded Image
  fullField: null,     // Image of the full field with the outline
  masks: null,         // {roi: [[r, c]...], neighbours: [[[r, c]...], ...]}
  trace: null,         // {fs, trace}
  clipSpan: null,      // {start, interval, length}: the clip's place in the trace (seconds)
  view: null,          // [t0, t1] of the trace shown (seconds, or frames without fs)
  busy: false,
};

function settings() {
  return {
    background: document.querySelector("input[name=background]:checked").value,
    mask: $("show-mask").checked,
    outline: $("show-outline").checked,
    neighbours: $("show-neighbours").checked,
    brightness: Number($("brightness").value),
    contrast: Number($("contrast").value),
    speed: Number($("speed").value),
    trace_view: state.view,
  };
}

function filterText() {
  const s = settings();
  return `brightness(${s.brightness}) contrast(${s.contrast})`;
}

async function api(path, options) {
  const response = await fetch(path, {credentials: "same-origin", ...options});
  if (response.status === 401) {  // signed out or revoked: show the sign-in form
    window.location.assign("/");
    throw new Error("not signed in");
  }
  return response;
}

function loadImage(url) {
  return new Promise((resolve) => {
    if (!url) { resolve(null); return; }
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => resolve(null);
    image.src = url;
  });
}

// ---- drawing -------------------------------------------------------------------------

function edges(pixels) {
  // The boundary of a set of pixels: unit segments between a pixel inside and one outside.
  const inside = new Set(pixels.map(([r, c]) => r * 100000 + c));
  const has = (r, c) => inside.has(r * 100000 + c);
  const segments = [];
  for (const [r, c] of pixels) {
    if (!has(r - 1, c)) segments.push([c, r, c + 1, r]);
    if (!has(r + 1, c)) segments.push([c, r + 1, c + 1, r + 1]);
    if (!has(r, c - 1)) segments.push([c, r, c, r + 1]);
    if (!has(r, c + 1)) segments.push([c + 1, r, c + 1, r + 1]);
  }
  return segments;
}

function strokeEdges(context, pixels, colour, width) {
  context.strokeStyle = colour;
  context.lineWidth = width;
  context.beginPath();
  for (const [x0, y0, x1, y1] of edges(pixels)) {
    context.moveTo(x0 * SCALE, y0 * SCALE);
    context.lineTo(x1 * SCALE, y1 * SCALE);
  }
  context.stroke();
}

function drawOverlays(context, s, withMask) {
  if (!state.masks) return;
  if (s.neighbours) {
    for (const pixels of state.masks.neighbours) strokeEdges(context, pixels, "#26c6da", 1.5);
  }
  if (withMask && s.mask) {
    context.fillStyle = "rgba(255, 64, 64, 0.4)";
    for (const [r, c] of state.masks.roi) context.fillRect(c * SCALE, r * SCALE, SCALE, SCALE);
  }
  if (s.outline) strokeEdges(context, state.masks.roi, "#ff3b3b", 2);
}

function drawProjection() {
  const canvas = $("projection");
  const context = canvas.getContext("2d");
  const s = settings();
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const image = state.images[s.background];
  if (image) {
    context.imageSmoothingEnabled = false;
    context.filter = filterText();
    context.drawImage(image, 0, 0, canvas.width, canvas.height);
    context.filter = "none";
  } else {
    context.fillStyle = "#bbb";
    context.font = "16px sans-serif";
    context.fillText(`no ${s.background} image for this ROI`, 20, 30);
  }
  drawOverlays(context, s, true);
}

function drawClipOverlay() {
  const canvas = $("clip-overlay");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  drawOverlays(context, {...settings(), neighbours: false}, false);
  $("clip").style.filter = filterText();
}

function drawFullField() {
  const canvas = $("full-field");
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const image = state.fullField;
  if (!image) return;
  const fit = Math.min(canvas.width / image.naturalWidth, canvas.height / image.naturalHeight);
  const width = image.naturalWidth * fit, height = image.naturalHeight * fit;
  const left = (canvas.width - width) / 2, top = (canvas.height - height) / 2;
  context.filter = filterText();
  context.drawImage(image, left, top, width, height);
  context.filter = "none";
  const crop = state.task.crop;
  if (crop.video_shape) {  // box the crop, in the frame's pixels
    const sx = width / crop.video_shape[1], sy = height / crop.video_shape[0];
    context.strokeStyle = "#ffd33d";
    context.lineWidth = 1.5;
    context.strokeRect(left + crop.col * sx, top + crop.row * sy, crop.size * sx, crop.size * sy);
  }
}

function redrawImages() {
  drawProjection();
  drawClipOverlay();
  drawFullField();
}

// ---- trace ---------------------------------------------------------------------------

function traceTime(index) {
  return state.trace.fs ? index / state.trace.fs : index;
}

function traceEnd() {
  return traceTime(state.trace.trace.length);
}

function clipTimeInTrace() {
  // The clip's current moment on the trace's time axis, or null when unknown.
  const video = $("clip");
  if (!state.clipSpan || !state.trace || !state.trace.fs || !video.src) return null;
  return state.clipSpan.start + video.currentTime;
}

function setView(t0, t1) {
  const end = traceEnd();
  const width = Math.min(Math.max(t1 - t0, traceTime(8)), end);
  t0 = Math.max(0, Math.min(t0, end - width));
  state.view = [t0, t0 + width];
  drawTrace();
}

function clipView() {
  if (state.clipSpan && state.trace.fs) {
    const span = state.clipSpan.interval * state.clipSpan.length;
    setView(state.clipSpan.start - span / 2, state.clipSpan.start + span * 1.5);
  } else {
    setView(0, traceEnd());
  }
}

function drawTrace() {
  const canvas = $("trace");
  const context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 24;
  context.clearRect(0, 0, width, height);
  if (!state.trace || !state.trace.trace.length) return;
  const values = state.trace.trace;
  const [t0, t1] = state.view;
  const first = Math.max(0, Math.floor(t0 * (state.trace.fs || 1)));
  const last = Math.min(values.length, Math.ceil(t1 * (state.trace.fs || 1)) + 1);
  let low = Infinity, high = -Infinity;
  for (let i = first; i < last; i++) { low = Math.min(low, values[i]); high = Math.max(high, values[i]); }
  if (high === low) { high += 1; low -= 1; }
  const x = (t) => ((t - t0) / (t1 - t0)) * width;
  const y = (v) => height - pad - ((v - low) / (high - low)) * (height - 2 * pad);
  if (state.clipSpan && state.trace.fs) {  // shade the clip's span
    const start = x(state.clipSpan.start);
    const end = x(state.clipSpan.start + state.clipSpan.interval * state.clipSpan.length);
    context.fillStyle = "rgba(11, 98, 196, 0.10)";
    context.fillRect(start, 0, end - start, height);
  }
  // min and max of the samples under each column, so a long trace keeps its peaks
  context.strokeStyle = "#1b1f24";
  context.lineWidth = 1;
  context.beginPath();
  const perColumn = (last - first) / width;
  if (perColumn <= 1) {
    for (let i = first; i < last; i++) {
      const px = x(traceTime(i)), py = y(values[i]);
      if (i === first) context.moveTo(px, py); else context.lineTo(px, py);
    }
  } else {
    for (let column = 0; column < width; column++) {
      const a = first + Math.floor(column * perColumn);
      const b = Math.min(last, first + Math.floor((column + 1) * perColumn) + 1);
      let lo = Infinity, hi = -Infinity;
      for (let i = a; i < b; i++) { lo = Math.min(lo, values[i]); hi = Math.max(hi, values[i]); }
      context.moveTo(column + 0.5, y(lo));
      context.lineTo(column + 0.5, y(hi));
    }
  }
  context.stroke();
  const now = clipTimeInTrace();
  if (now !== null) {
    context.strokeStyle = "#e5534b";
    context.lineWidth = 2;
    context.beginPath();
    context.moveTo(x(now), 0);
    context.lineTo(x(now), height);
    context.stroke();
  }
  context.fillStyle = "#5b6570";
  context.font = "12px sans-serif";
  const unit = state.trace.fs ? "s" : "frames";
  context.fillText(`${t0.toFixed(1)} ${unit}`, 4, height - 6);
  const endLabel = `${t1.toFixed(1)} ${unit}`;
  context.fillText(endLabel, width - context.measureText(endLabel).width - 4, height - 6);
  $("trace-info").textContent =
    `showing ${(t1 - t0).toFixed(1)} of ${traceEnd().toFixed(1)} ${unit}` +
    (state.clipSpan && state.trace.fs ? "; shaded: the clip" : "");
}

function followPlayhead() {
  const now = clipTimeInTrace();
  if (now !== null && state.view) {
    const [t0, t1] = state.view;
    if (now < t0 || now > t1) setView(now - (t1 - t0) * 0.1, now + (t1 - t0) * 0.9);
    else drawTrace();
  }
  const video = $("clip");
  $("clip-time").textContent = video.duration ?
    `${video.currentTime.toFixed(1)} / ${video.duration.toFixed(1)} s` : "";
}

function animate() {
  followPlayhead();
  if (!$("clip").paused) requestAnimationFrame(animate);
}

function seekFromTrace(event) {
  if (!state.view) return;
  const canvas = $("trace");
  const rect = canvas.getBoundingClientRect();
  const [t0, t1] = state.view;
  const t = t0 + ((event.clientX - rect.left) / rect.width) * (t1 - t0);
  const video = $("clip");
  if (!state.clipSpan || !state.trace.fs || !video.duration) return;
  video.currentTime = Math.min(Math.max(t - state.clipSpan.start, 0), video.duration - 0.001);
  followPlayhead();
}

function zoom(factor, centre) {
  const [t0, t1] = state.view;
  const middle = centre ?? (clipTimeInTrace() ?? (t0 + t1) / 2);
  const width = (t1 - t0) * factor;
  setView(middle - (middle - t0) * factor, middle - (middle - t0) * factor + width);
}

// ---- tasks ---------------------------------------------------------------------------

function showProgress(progress, labeler, jobs) {
  if (labeler) $("who").textContent = `Signed in as ${labeler}`;
  if (jobs) $("jobs").textContent = `Job: ${jobs.join(", ")}`;
  if (progress) {
    $("progress").textContent =
      `You labelled ${progress.n_labelled_by_me}; ${progress.n_open_for_me} left for you ` +
      `(${progress.n_tasks} ROIs in the job)`;
  }
}

function showNothingLeft() {
  state.task = null;
  const video = $("clip");
  video.pause();
  video.removeAttribute("src");
  $("workspace").hidden = true;
  $("done").hidden = false;
}

async function showTask(task) {
  state.task = task;
  state.requestId = crypto.randomUUID();
  state.images = {};
  state.masks = null;
  state.trace = null;
  state.clipSpan = null;
  $("done").hidden = true;
  $("workspace").hidden = false;
  $("roi-title").textContent =
    `ROI ${task.roi_id} of experiment ${task.experiment_id} ` +
    `(${task.n_labels} of ${task.quota} labels so far)`;
  const revisit = $("revisit");
  revisit.hidden = !task.my_label;
  revisit.textContent = task.my_label ?
    `You labelled this ROI "${task.my_label}"; answering again changes your label.` : "";
  $("note").value = task.my_note || "";
  const video = $("clip");
  video.pause();
  if (task.urls.clip) video.src = task.urls.clip; else video.removeAttribute("src");
  video.playbackRate = Number($("speed").value);
  $("play").textContent = "Play";
  const urls = task.urls;
  const [avg, max, correlation, full, masks, trace, clipTrace] = await Promise.all([
    loadImage(urls.avg), loadImage(urls.max), loadImage(urls.correlation),
    loadImage(urls.full_outline),
    api(`/api/tasks/${task.labeling_task_id}/masks`).then((r) => r.ok ? r.json() : null),
    api(`/api/tasks/${task.labeling_task_id}/trace`).then((r) => r.ok ? r.json() : null),
    urls.clip_trace ? api(urls.clip_trace).then((r) => r.ok ? r.json() : null) : null,
  ]);
  if (state.task !== task) return;  // another task was asked for meanwhile
  state.images = {avg, max, correlation};
  state.fullField = full;
  state.masks = masks;
  state.trace = trace;
  if (clipTrace && typeof clipTrace.pointStart === "number") {
    state.clipSpan = {start: clipTrace.pointStart, interval: clipTrace.pointInterval,
                      length: clipTrace.dataLength};
  }
  redrawImages();
  if (state.trace) clipView();
  state.shownAt = performance.now();
  setBusy(false);
}

async function loadNext() {
  setBusy(true);
  const response = await api("/api/next");
  const body = await response.json();
  showProgress(body.progress, body.labeler, body.jobs);
  if (!body.task) { showNothingLeft(); setBusy(false); return; }
  await showTask(body.task);
}

async function revisit(taskId) {
  setBusy(true);
  const response = await api(`/api/tasks/${taskId}`);
  if (response.ok) await showTask(await response.json());
  else setBusy(false);
}

async function refreshHistory() {
  const response = await api("/api/labels/mine");
  const {labels} = await response.json();
  const list = $("history");
  list.replaceChildren();
  for (const entry of labels) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = `ROI ${entry.roi_id}: ${entry.label}`;
    item.append(text);
    if (entry.note) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = ` (${entry.note})`;
      item.append(note);
    }
    const change = document.createElement("button");
    change.type = "button";
    change.textContent = "Change";
    change.setAttribute("aria-label", `Change your label of ROI ${entry.roi_id}`);
    change.addEventListener("click", () => revisit(entry.labeling_task_id));
    item.append(" ", change);
    list.append(item);
  }
}

function setBusy(busy) {
  state.busy = busy;
  $("cell").disabled = busy;
  $("not-cell").disabled = busy;
}

async function answer(label) {
  if (!state.task || state.busy) return;
  setBusy(true);
  const body = JSON.stringify({
    labeling_task_id: state.task.labeling_task_id, label,
    note: $("note").value.trim() || null,
    seconds_shown: (performance.now() - state.shownAt) / 1000,
    view_settings: settings(), request_id: state.requestId,
  });
  let response = null;
  for (let attempt = 0; attempt < 4 && response === null; attempt++) {
    try {  // a dropped connection is retried with the same request id: stored once
      response = await api("/api/labels", {
        method: "POST", headers: {"content-type": "application/json"}, body});
    } catch (error) {
      if (error.message === "not signed in") return;
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
  }
  const status = $("status");
  if (response === null) {
    status.textContent = "Could not reach the server; your answer was not saved. Try again.";
    setBusy(false);
    return;
  }
  if (response.status === 409) {
    status.textContent = "This ROI got all its labels meanwhile; here is the next one.";
  } else if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    status.textContent = `Not saved: ${problem.error || response.statusText}`;
    setBusy(false);
    return;
  } else {
    status.textContent = `Saved: ROI ${state.task.roi_id} is "${label}".`;
  }
  $("note").value = "";
  await refreshHistory();
  await loadNext();
}

// ---- wiring --------------------------------------------------------------------------

function togglePlay() {
  const video = $("clip");
  if (!video.src) return;
  if (video.paused) video.play(); else video.pause();
}

function wire() {
  const video = $("clip");
  $("play").addEventListener("click", togglePlay);
  video.addEventListener("play", () => { $("play").textContent = "Pause"; animate(); });
  video.addEventListener("pause", () => { $("play").textContent = "Play"; followPlayhead(); });
  video.addEventListener("seeked", followPlayhead);
  video.addEventListener("loadedmetadata", followPlayhead);
  $("speed").addEventListener("change", () => { video.playbackRate = Number($("speed").value); });
  for (const input of document.querySelectorAll(
      "input[name=background], #show-mask, #show-outline, #show-neighbours, #brightness, #contrast")) {
    input.addEventListener("input", redrawImages);
  }
  $("reset-view").addEventListener("click", () => {
    $("brightness").value = 1;
    $("contrast").value = 1;
    redrawImages();
  });
  const trace = $("trace");
  trace.addEventListener("click", seekFromTrace);
  trace.addEventListener("wheel", (event) => {
    if (!state.view) return;
    event.preventDefault();
    const rect = trace.getBoundingClientRect();
    const [t0, t1] = state.view;
    const at = t0 + ((event.clientX - rect.left) / rect.width) * (t1 - t0);
    zoom(event.deltaY < 0 ? 0.5 : 2, at);
  }, {passive: false});
  $("zoom-in").addEventListener("click", () => state.view && zoom(0.5));
  $("zoom-out").addEventListener("click", () => state.view && zoom(2));
  $("zoom-clip").addEventListener("click", () => state.trace && clipView());
  $("zoom-all").addEventListener("click", () => state.trace && setView(0, traceEnd()));
  $("cell").addEventListener("click", () => answer("cell"));
  $("not-cell").addEventListener("click", () => answer("not cell"));
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("textarea, input, select");
    if (typing || event.ctrlKey || event.metaKey || event.altKey) {
      if (event.key === "Escape" && typing) event.target.blur();
      return;
    }
    const key = event.key.toLowerCase();
    if (key === "c") { event.preventDefault(); answer("cell"); }
    else if (key === "n") { event.preventDefault(); answer("not cell"); }
    else if (key === " " && !event.target.closest("button")) {
      event.preventDefault();
      togglePlay();
    }
  });
}

wire();
refreshHistory().then(loadNext);
