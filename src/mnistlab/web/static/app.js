// The drawing page: strokes on a canvas, sent as PNG to /api/predict while drawing.
"use strict";

const SIDE = 280;          // the drawing's own coordinates, and the size of the PNG sent
const PEN = 18;            // pen width in those: MNIST strokes are ~1/10 of the digit
const MIN_EXTENT = 30;     // strokes that fit in a box this small are a dot, not a digit yet
const THROTTLE_MS = 150;   // at most one request per this while the pen moves
const SEEN = 28;           // the model's input side
// How the page names a dataset the server reports; another one is shown by its name.
const DATASET_TITLES = { mnist: "MNIST", "fashion-mnist": "Fashion-MNIST" };

const draw = document.getElementById("draw");
const ctx = draw.getContext("2d");
const input = document.getElementById("input");
const inputCtx = input.getContext("2d");
const overlay = document.getElementById("overlay");
const errorBox = document.getElementById("error");
const answerBox = document.getElementById("answer");
const busyMark = document.getElementById("busy");
const digitOut = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const bars = document.getElementById("bars");

let strokes = [];          // each stroke: [[x, y], ...] in drawing coordinates
const active = new Map();  // pointerId -> the stroke that pointer is drawing
let background = null;     // an uploaded image under the strokes (an <img>)
let uploadAnswer = null;   // the upload's own answer, shown again when Undo gets back to it
// Every answer belongs to the drawing it was asked for. `generation` counts drawings: Clear,
// Undo and an upload start a new one, and answers asked for an older one are dropped. Within
// a drawing, ink only grows; an answer older than the one shown is dropped too.
let generation = 0;
let sent = 0;              // requests sent, numbering them
let shownSeq = 0;          // the number of the request whose answer is shown
let inFlight = null;       // the request on its way: {seq, generation, ...}
let pending = null;        // the newest request waiting for it
let lastSent = 0;
let lastResult = null;
let dropped = 0;
let promptText = "Draw a digit";
let classes = Array.from({ length: 10 }, (_, d) => String(d));  // until /api/model names them

// One bar per class, labelled with its name; long names get a wider label column.
function makeBars() {
  bars.replaceChildren();
  bars.classList.toggle("named", classes.some((name) => name.length > 2));
  for (const name of classes) {
    const li = document.createElement("li");
    li.innerHTML = '<span class="name"></span><span class="bar"><span></span></span><span class="p">–</span>';
    li.querySelector(".name").textContent = name;  // text, not HTML: names are data
    li.title = name;
    bars.append(li);
  }
}
makeBars();

// The canvases' backing stores follow the screen's pixel density, so strokes stay sharp on
// a phone; drawing coordinates stay SIDE x SIDE whatever the density.
function fitDensity() {
  const ratio = window.devicePixelRatio || 1;
  draw.width = draw.height = Math.round(SIDE * ratio);
  input.width = input.height = Math.round(input.clientWidth * ratio) || 112;
  redraw();
  paintInput();
  matchMedia(`(resolution: ${ratio}dppx)`).addEventListener("change", fitDensity, { once: true });
}

// The drawing on a canvas `scale` times SIDE: the upload fitted, then the strokes.
function paint(context, scale) {
  context.setTransform(scale, 0, 0, scale, 0, 0);
  context.fillStyle = "#fff";
  context.fillRect(0, 0, SIDE, SIDE);
  if (background) {
    const fit = Math.min(SIDE / background.naturalWidth, SIDE / background.naturalHeight);
    const w = background.naturalWidth * fit, h = background.naturalHeight * fit;
    context.drawImage(background, (SIDE - w) / 2, (SIDE - h) / 2, w, h);
  }
  context.strokeStyle = "#111";
  context.lineWidth = PEN;
  context.lineCap = "round";
  context.lineJoin = "round";
  for (const stroke of strokes) {
    context.beginPath();
    context.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) context.lineTo(x, y);
    if (stroke.length === 1) context.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    context.stroke();
  }
}

function redraw() { paint(ctx, draw.width / SIDE); }

// What is sent: the drawing at SIDE x SIDE, whatever the screen's density.
function snapshot() {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = SIDE;
  paint(canvas.getContext("2d"), 1);
  return canvas.toDataURL("image/png");
}

function point(event) {
  const box = draw.getBoundingClientRect();
  return [(event.clientX - box.left) * SIDE / box.width, (event.clientY - box.top) * SIDE / box.height];
}

// One stroke per pointer: two fingers draw two strokes, not one zigzag between them.
draw.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  draw.setPointerCapture(event.pointerId);
  const stroke = [point(event)];
  active.set(event.pointerId, stroke);
  strokes.push(stroke);
  redraw();
});

draw.addEventListener("pointermove", (event) => {
  const stroke = active.get(event.pointerId);
  if (!stroke) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) stroke.push(point(e));
  redraw();
  if (performance.now() - lastSent > THROTTLE_MS) predictDrawing(false);
});

function endStroke(event) {
  if (!active.delete(event.pointerId)) return;
  predictDrawing(true);
}
draw.addEventListener("pointerup", endStroke);
draw.addEventListener("pointercancel", endStroke);

// A new drawing: whatever is on its way for the old one is dropped when it comes.
function newDrawing() {
  generation++;
  pending = null;
  lastResult = null;
  updateBusy();
}

document.getElementById("undo").addEventListener("click", () => {
  const removed = strokes.pop();
  for (const [id, stroke] of active) if (stroke === removed) active.delete(id);
  newDrawing();
  redraw();
  if (!strokes.length && background && uploadAnswer) {
    accept(uploadAnswer);  // back to the upload as it came: its own answer, no request
  } else {
    reset();  // the answer shown was for the stroke just taken away
    predictDrawing(true);
  }
});

document.getElementById("clear").addEventListener("click", () => {
  strokes = [];
  active.clear();
  background = null;
  uploadAnswer = null;
  newDrawing();
  redraw();
  reset();
});

function tooSmall() {
  if (background) return false;
  const xs = strokes.flat().map((p) => p[0]), ys = strokes.flat().map((p) => p[1]);
  const extent = Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys));
  return extent < MIN_EXTENT;
}

// `done`: the stroke ended (or Undo): a dot then gets the prompt; while the pen moves it
// only waits for more ink.
function predictDrawing(done) {
  if (!strokes.length && !background) { reset(); return; }
  if (tooSmall()) { if (done) showPrompt(); return; }
  send({ body: JSON.stringify({ image: snapshot() }), headers: { "Content-Type": "application/json" } });
}

function predictFile(file) {
  strokes = [];
  active.clear();
  background = null;
  uploadAnswer = null;
  newDrawing();
  reset();
  redraw();
  const mine = generation;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {   // shown as the browser sees it; drawing then adds to it
    URL.revokeObjectURL(url);
    if (mine === generation) { background = img; redraw(); }
  };
  // A format the browser cannot show (TIFF, ...): the server's preview comes with the answer.
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
  const form = new FormData();
  form.append("file", file, file.name);
  const preview = Math.min(1024, Math.round(SIDE * (window.devicePixelRatio || 1)));
  send({ body: form, query: `?preview=${preview}`, upload: true });
}

// One request at a time; while one is out, only the newest waiting one is kept.
function send(request) {
  request.generation ??= generation;
  if (inFlight) { pending = request; updateBusy(); return; }
  request.seq = ++sent;
  inFlight = request;
  lastSent = performance.now();
  updateBusy();
  fetch(`/api/predict${request.query ?? ""}`, { method: "POST", body: request.body, headers: request.headers })
    .then(async (response) => {
      let answer;
      try { answer = await response.json(); } catch { answer = { error: `server answered ${response.status}` }; }
      if (!response.ok) answer = { error: answer.error || `server answered ${response.status}` };
      receive(request, answer);
    })
    .catch((e) => receive(request, { error: `no answer from the server (${e.message})` }))
    .finally(() => {
      inFlight = null;
      if (pending) { const next = pending; pending = null; send(next); }
      updateBusy();
    });
}

function receive(request, answer) {
  if (request.generation !== generation || request.seq < shownSeq) { dropped++; return; }
  shownSeq = request.seq;
  if (answer.error) {
    reset();   // an error replaces the answer: it is not about the drawing shown before
    showError(answer.error);
    return;
  }
  if (request.upload) {
    uploadAnswer = answer;
    if (!background && answer.preview) {   // the browser could not show the file
      const img = new Image();
      img.onload = () => { if (request.generation === generation && !background) { background = img; redraw(); } };
      img.src = answer.preview;
    }
  }
  accept(answer);
}

function accept(answer) {
  errorBox.hidden = true;
  show(answer);
}

// Waiting for an answer to the drawing as it is now.
function updateBusy() {
  const busy = Boolean(pending || (inFlight && inFlight.generation === generation));
  answerBox.setAttribute("aria-busy", String(busy));
  busyMark.hidden = !busy;
}

function clearAnswer() {
  digitOut.classList.remove("named", "prompt");
  confidence.textContent = "";
  for (const li of bars.children) {
    li.className = "";
    li.querySelector(".bar span").style.width = "0";
    li.querySelector(".p").textContent = "–";
  }
  inputCtx.clearRect(0, 0, input.width, input.height);
}

function reset() {
  lastResult = null;
  errorBox.hidden = true;
  clearAnswer();
  digitOut.textContent = "?";
}

function showPrompt() {
  reset();
  digitOut.textContent = promptText;
  digitOut.classList.add("prompt");
  confidence.textContent = "too little ink to read";
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function show(answer) {
  lastResult = answer;
  clearAnswer();
  const name = answer.name ?? classes[answer.digit] ?? String(answer.digit);
  digitOut.textContent = name;
  digitOut.classList.toggle("named", name.length > 2);  // "Ankle boot" in a smaller size
  confidence.textContent = `${(100 * answer.probabilities[answer.digit]).toFixed(1)}% sure`;
  answer.probabilities.forEach((p, d) => {
    const li = bars.children[d];
    if (!li) return;
    li.className = d === answer.digit ? "top" : "";
    li.querySelector(".bar span").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".p").textContent = `${(100 * p).toFixed(1)}%`;
  });
  paintInput();
}

// The 28x28 input in gray; with the overlay, pixels that pushed towards the answer in red
// and those that pushed against it in blue, stronger where the saliency is larger.
function paintInput() {
  if (!lastResult) return;
  const small = new ImageData(SEEN, SEEN);
  for (let r = 0; r < SEEN; r++) {
    for (let c = 0; c < SEEN; c++) {
      const i = 4 * (SEEN * r + c);
      const v = 255 * lastResult.image[r][c];
      let [red, green, blue] = [v, v, v];
      if (overlay.checked && lastResult.saliency) {
        const s = lastResult.saliency[r][c];
        const a = Math.min(1, Math.abs(s) * 2.5);
        const tint = s > 0 ? [255, 80, 40] : [40, 140, 255];
        red = (1 - a) * red + a * tint[0];
        green = (1 - a) * green + a * tint[1];
        blue = (1 - a) * blue + a * tint[2];
      }
      small.data.set([red, green, blue, 255], i);
    }
  }
  const scratch = document.createElement("canvas");
  scratch.width = scratch.height = SEEN;
  scratch.getContext("2d").putImageData(small, 0, 0);
  inputCtx.imageSmoothingEnabled = false;
  inputCtx.drawImage(scratch, 0, 0, input.width, input.height);
}
overlay.addEventListener("change", paintInput);

document.getElementById("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) predictFile(file);
  event.target.value = "";
});

const drop = document.getElementById("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) predictFile(file);
});

fetch("/api/model").then((r) => r.json()).then((m) => {
  const dataset = DATASET_TITLES[m.dataset] ?? m.dataset ?? "MNIST";
  const acc = m.test_accuracy == null ? "" : ` · ${m.test_accuracy}% on the ${dataset} test set`;
  const params = m.parameters == null ? m.checkpoint : `${m.parameters.toLocaleString("en")} parameters`;
  document.getElementById("model").textContent = `Model ${m.name} · ${params}${acc}`;
  if (m.saliency) {  // why the overlay cannot be shown (an ONNX file has no gradients)
    overlay.checked = false;
    overlay.disabled = true;
    overlay.parentElement.title = m.saliency;
    overlay.parentElement.append(` (not available: ${m.saliency})`);
  }
  if (m.dataset && m.dataset !== "mnist") {  // the page says "digit" for MNIST only
    const heading = `Draw or upload a ${dataset} image`;
    document.querySelector("h1").textContent = heading;
    document.title = `mnistlab: ${heading.toLowerCase()}`;
    draw.setAttribute("aria-label", `drawing canvas: draw a ${dataset} image here`);
    promptText = "Draw more";
  }
  if (Array.isArray(m.classes) && m.classes.length) {
    classes = m.classes.map(String);
    makeBars();
    if (lastResult) show(lastResult);
  }
}).catch(() => { document.getElementById("model").textContent = "model info unavailable"; });

fitDensity();

// For tests and the curious: is the page waiting for nothing, and what did it last show?
window.mnistlab = {
  idle: () => !inFlight && !pending,
  result: () => lastResult,
  requests: () => sent,
  dropped: () => dropped,
  strokes: () => strokes.length,
};
