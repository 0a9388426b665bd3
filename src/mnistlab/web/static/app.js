// The drawing page: strokes on a canvas, sent as PNG to /api/predict while drawing.
"use strict";

const PEN = 18;            // pen width on the 280 px canvas: MNIST strokes are ~1/10 of the digit
const THROTTLE_MS = 150;   // at most one request per this while the pen moves
// How the page names a dataset the server reports; another one is shown by its name.
const DATASET_TITLES = { mnist: "MNIST", "fashion-mnist": "Fashion-MNIST" };

const draw = document.getElementById("draw");
const ctx = draw.getContext("2d");
const input = document.getElementById("input");
const inputCtx = input.getContext("2d");
const overlay = document.getElementById("overlay");
const errorBox = document.getElementById("error");
const digitOut = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const bars = document.getElementById("bars");

let strokes = [];          // each stroke: [[x, y], ...] in canvas pixels
let current = null;        // the stroke being drawn
let inFlight = false;      // a request is on its way
let pending = null;        // the next request to send when it is back
let lastSent = 0;
let lastResult = null;
let requests = 0;
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

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, draw.width, draw.height);
  ctx.strokeStyle = "#111";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    ctx.stroke();
  }
}

function point(event) {
  const box = draw.getBoundingClientRect();
  return [(event.clientX - box.left) * draw.width / box.width,
          (event.clientY - box.top) * draw.height / box.height];
}

draw.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  draw.setPointerCapture(event.pointerId);
  current = [point(event)];
  strokes.push(current);
  redraw();
});

draw.addEventListener("pointermove", (event) => {
  if (!current) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) current.push(point(e));
  redraw();
  if (performance.now() - lastSent > THROTTLE_MS) predictDrawing();
});

function endStroke() {
  if (!current) return;
  current = null;
  predictDrawing();
}
draw.addEventListener("pointerup", endStroke);
draw.addEventListener("pointercancel", endStroke);

document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  strokes.length ? predictDrawing() : reset();
});

document.getElementById("clear").addEventListener("click", () => {
  strokes = [];
  redraw();
  reset();
});

function predictDrawing() {
  if (!strokes.length) return;
  send({ body: JSON.stringify({ image: draw.toDataURL("image/png") }),
         headers: { "Content-Type": "application/json" } });
}

function predictFile(file) {
  strokes = [];
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {   // show the upload on the canvas, fitted
    redraw();
    const scale = Math.min(draw.width / img.width, draw.height / img.height);
    const w = img.width * scale, h = img.height * scale;
    ctx.drawImage(img, (draw.width - w) / 2, (draw.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  img.onerror = () => { redraw(); URL.revokeObjectURL(url); };
  img.src = url;
  const form = new FormData();
  form.append("file", file, file.name);
  send({ body: form });
}

// One request at a time; while one is out, only the newest waiting one is kept.
function send(request) {
  if (inFlight) { pending = request; return; }
  inFlight = true;
  lastSent = performance.now();
  requests++;
  fetch("/api/predict", { method: "POST", ...request })
    .then(async (response) => {
      let answer;
      try { answer = await response.json(); } catch { answer = { error: `server answered ${response.status}` }; }
      if (!response.ok) throw new Error(answer.error || `server answered ${response.status}`);
      show(answer);
    })
    .catch((e) => showError(e.message))
    .finally(() => {
      inFlight = false;
      if (pending) { const next = pending; pending = null; send(next); }
    });
}

function reset() {
  lastResult = null;
  errorBox.hidden = true;
  digitOut.textContent = "?";
  digitOut.classList.remove("named");
  confidence.textContent = "";
  for (const li of bars.children) {
    li.className = "";
    li.querySelector(".bar span").style.width = "0";
    li.querySelector(".p").textContent = "–";
  }
  inputCtx.clearRect(0, 0, input.width, input.height);
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function show(answer) {
  lastResult = answer;
  errorBox.hidden = true;
  const name = answer.name ?? classes[answer.digit] ?? String(answer.digit);
  digitOut.textContent = name;
  digitOut.classList.toggle("named", name.length > 2);  // "Ankle boot" in a smaller size
  confidence.textContent = `${(100 * answer.probabilities[answer.digit]).toFixed(1)}% sure`;
  answer.probabilities.forEach((p, d) => {
    const li = bars.children[d];
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
  const small = new ImageData(28, 28);
  for (let r = 0; r < 28; r++) {
    for (let c = 0; c < 28; c++) {
      const i = 4 * (28 * r + c);
      const v = 255 * lastResult.image[r][c];
      let [red, green, blue] = [v, v, v];
      if (overlay.checked) {
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
  scratch.width = scratch.height = 28;
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
  document.getElementById("model").textContent =
    `Model ${m.name} · ${m.parameters.toLocaleString("en")} parameters${acc}`;
  if (m.dataset && m.dataset !== "mnist") {  // the page says "digit" for MNIST only
    const heading = `Draw or upload a ${dataset} image`;
    document.querySelector("h1").textContent = heading;
    document.title = `mnistlab: ${heading.toLowerCase()}`;
    draw.setAttribute("aria-label", `drawing canvas: draw a ${dataset} image here`);
  }
  if (Array.isArray(m.classes) && m.classes.length) {
    classes = m.classes.map(String);
    makeBars();
    if (lastResult) show(lastResult);
  }
}).catch(() => { document.getElementById("model").textContent = "model info unavailable"; });

redraw();

// For tests and the curious: is the page waiting for nothing, and what did it last show?
window.mnistlab = {
  idle: () => !inFlight && !pending,
  result: () => lastResult,
  requests: () => requests,
};
