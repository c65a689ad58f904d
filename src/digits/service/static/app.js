// The drawing page: pen strokes on a canvas, read by POST /predict while you draw.
"use strict";

const SEND_SIZE = 280;   // the drawing is sent at this size: plenty for a 28×28 model, quick to send
const THROTTLE_MS = 80;  // while drawing, at most one prediction per interval
const INK = "#111827";

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const hint = document.getElementById("hint");
const digit = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const status = document.getElementById("status");
const bars = document.getElementById("bars");
const photo = document.getElementById("photo");

let drawn = false;      // anything on the pad?
let stroke = null;      // the last point of the stroke being drawn
let timer = 0;          // pending throttled prediction
let busy = false;       // a request is on its way…
let again = false;      // …and the drawing changed since it left
let generation = 0;     // bumped by Clear, so late answers about an old drawing are dropped

// --- drawing ------------------------------------------------------------------------------

function paper() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
}

function fitPad() {
  // one canvas pixel per device pixel keeps strokes sharp; a resize keeps the drawing
  const size = Math.round(pad.clientWidth * (window.devicePixelRatio || 1));
  if (!size || pad.width === size) return;
  const old = drawn ? snapshotCanvas(pad.width) : null;
  pad.width = pad.height = size;
  paper();
  if (old) ink.drawImage(old, 0, 0, size, size);
}

function at(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width,
           y: (event.clientY - box.top) * pad.height / box.height };
}

function penWidth(event) {
  // a pen's pressure thickens the line a little; mouse and finger report 0.5
  const pressure = event.pointerType === "pen" && event.pressure ? event.pressure : 0.5;
  return pad.width / 15 * (0.7 + 0.6 * pressure);
}

function dot(p, width) {
  ink.fillStyle = INK;
  ink.beginPath();
  ink.arc(p.x, p.y, width / 2, 0, 2 * Math.PI);
  ink.fill();
}

function line(from, to, width) {
  ink.strokeStyle = INK;
  ink.lineWidth = width;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(from.x, from.y);
  ink.lineTo(to.x, to.y);
  ink.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();  // no scrolling or text selection while drawing — nor focus, so:
  pad.focus();  // Escape clears what was just drawn
  pad.setPointerCapture(event.pointerId);
  stroke = at(event);
  dot(stroke, penWidth(event));
  drawn = true;
  hint.classList.add("hidden");
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!stroke) return;
  // coalesced events are the points between two frames: fast strokes stay smooth
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
    const p = at(e);
    line(stroke, p, penWidth(e));
    stroke = p;
  }
  schedule();
});

for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!stroke) return;
    stroke = null;
    schedule();
  });
}

pad.addEventListener("keydown", (event) => {
  if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") clear();
});

function clear() {
  generation += 1;
  clearTimeout(timer);
  timer = 0;
  drawn = false;
  paper();
  hint.classList.remove("hidden");
  showNothing();
}

document.getElementById("clear").addEventListener("click", clear);

// --- asking the model ---------------------------------------------------------------------

function schedule() {
  if (!timer) timer = setTimeout(() => { timer = 0; send(); }, THROTTLE_MS);
}

function snapshotCanvas(size) {
  const copy = document.createElement("canvas");
  copy.width = copy.height = size;
  const context = copy.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(pad, 0, 0, size, size);
  return copy;
}

async function send() {
  if (!drawn) return;
  if (busy) { again = true; return; }
  busy = true;
  try {
    const picture = await new Promise((done) => snapshotCanvas(SEND_SIZE).toBlob(done, "image/png"));
    await predict(picture, "image/png");
  } finally {
    busy = false;
    if (again) { again = false; send(); }
  }
}

async function predict(body, type) {
  const asked = generation;
  let answer, reply;
  try {
    answer = await fetch("/predict", { method: "POST", headers: { "Content-Type": type }, body });
  } catch {
    return showError("The server did not answer — is it still running?");
  }
  try {
    reply = await answer.json();
  } catch {
    reply = {};  // not ours: a proxy's error page, say
  }
  if (asked !== generation) return;
  if (!answer.ok || !reply.probabilities) return showError(reply.detail || `The server answered ${answer.status}.`);
  show(reply);
}

// --- showing the answer -------------------------------------------------------------------

const columns = Array.from({ length: 10 }, (_, d) => {
  const item = document.createElement("li");
  item.innerHTML = `<span class="pct">0%</span><span class="track"><span class="fill"></span></span>` +
                   `<span class="label">${d}</span>`;
  bars.append(item);
  return { item, pct: item.querySelector(".pct"), fill: item.querySelector(".fill"), label: item.querySelector(".label") };
});

function percent(p) {
  return p >= 0.995 ? "100%" : p < 0.005 ? (p > 0 ? "<1%" : "0%") : `${Math.round(p * 100)}%`;
}

function show(reply) {
  const p = reply.probabilities;
  digit.textContent = reply.class;
  confidence.textContent = `${percent(p[reply.digit])} sure it is a ${reply.class}`;
  status.textContent = reply.looks_like_digits ? `This looks like ${reply.looks_like_digits} digits, and the ` +
    "page reads one at a time: POST /predict?number=true reads a number (see /docs)." : "";
  status.classList.remove("error");
  columns.forEach((column, d) => {
    column.fill.style.height = `${(p[d] * 100).toFixed(1)}%`;
    column.pct.textContent = percent(p[d]);
    column.item.classList.toggle("top", d === reply.digit);
    column.item.setAttribute("aria-label", `${column.label.textContent}: ${percent(p[d])}`);
  });
  const image = seen.createImageData(28, 28);
  reply.input.flat().forEach((v, i) => {
    image.data.set([v, v, v, 255], 4 * i);
  });
  seen.putImageData(image, 0, 0);
}

function showNothing(why = "Waiting for a drawing") {
  digit.textContent = "?";
  confidence.textContent = why;
  status.textContent = "";
  status.classList.remove("error");
  columns.forEach((column, d) => {
    column.fill.style.height = "0";
    column.pct.textContent = "";
    column.item.classList.remove("top");
    column.item.setAttribute("aria-label", `${column.label.textContent}: no answer yet`);
  });
  seen.fillStyle = "#000";
  seen.fillRect(0, 0, 28, 28);
}

function showError(message) {
  showNothing("Could not read that");  // no earlier answer left beside the error
  status.textContent = message;
  status.classList.add("error");
}

// --- a photo instead of a drawing ---------------------------------------------------------

photo.addEventListener("change", async () => {
  const file = photo.files[0];
  photo.value = "";  // choosing the same file again still counts as a change
  if (!file) return;
  clear();
  try {  // show it on the pad, fitted; the server reads the original file
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    const w = bitmap.width * scale, h = bitmap.height * scale;
    ink.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    hint.classList.add("hidden");
  } catch {
    // a format this browser cannot show may still be one the server can read
  }
  drawn = true;
  // Sent as bytes, whatever the browser calls the file: the server tells a picture by its content.
  predict(file, "application/octet-stream");
});

// --- start --------------------------------------------------------------------------------

new ResizeObserver(fitPad).observe(pad);
fitPad();
showNothing();

const DATASET_NAMES = { mnist: "MNIST", "fashion-mnist": "Fashion-MNIST" };

fetch("/model").then((answer) => answer.json()).then((info) => {
  (info.classes || []).forEach((name, d) => {  // a model of another dataset names its own classes
    columns[d].label.textContent = name;
  });
  const dataset = DATASET_NAMES[info.dataset] || info.dataset || "MNIST";
  const parts = [`model: ${info.name}`];
  if (typeof info.accuracy === "number") parts.push(`${(info.accuracy * 100).toFixed(2)}% on the ${dataset} test set`);
  if (info.parameters) parts.push(`${Number(info.parameters).toLocaleString("en")} parameters`);
  document.getElementById("model").textContent = parts.join(" · ");
}).catch(() => {});
