// The drawing page: pointer events draw on the canvas (mouse, touch, pen); the drawing
// is sent as a PNG to /api/predict while drawing (one request in flight at a time) and
// when the stroke ends; the answer fills #prediction, #probabilities and #seen.
// In "A number" mode the pad is three times as wide, drawings go to /api/read, and the
// answer fills #number, #number-digits and a box per digit over the pad (#boxes).
"use strict";

const MAX_UPLOAD_BYTES = 4 * 1024 * 1024;  // the server's limit
const UPLOAD_SIDE = 1024;                  // bigger photos are scaled down before sending
const PREDICT_EVERY_MS = 120;              // while drawing, at most this often
// The drawing is sent at half the pad's size: 140 px is five times what the model sees,
// and the server prepares it in a fraction of the time 280 px takes (a quarter, measured).
const SEND_SIDE = 140;
const NUMBER_WIDTH = 3;                    // the number pad is this many times as wide as tall

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const clearButton = document.getElementById("clear");
const upload = document.getElementById("upload");
const prediction = document.getElementById("prediction");
const probabilities = document.getElementById("probabilities");
const seen = document.getElementById("seen");
const message = document.getElementById("message");
const modeButtons = { digit: document.getElementById("mode-digit"), number: document.getElementById("mode-number") };
const numberSection = document.querySelector(".number-result");
const numberText = document.getElementById("number");
const numberDigits = document.getElementById("number-digits");
const boxes = document.getElementById("boxes");
// The page's heading and lede per mode.
const HEADINGS = {
  digit: ["Draw a digit", "Write one digit, 0 to 9, and the network trained on MNIST reads it as you draw."],
  number: ["Write a number", "Write several digits side by side, and the network trained on MNIST reads each as you write."],
};
const feedback = document.getElementById("feedback");
const rightButton = document.getElementById("right");
const corrections = document.getElementById("corrections");
const feedbackStatus = document.getElementById("feedback-status");

let drawing = false;
let hasInk = false;
let lastPoint = null;
let inFlight = false;     // a request is on its way
let wanted = false;       // the drawing changed since that request was sent
let lastSent = 0;
let uploading = false;
let generation = 0;       // bumped by Clear: answers for an older drawing are dropped
let mode = "digit";       // or "number"
let answered = null;      // {drawing, digit}: the image sent for the answer on show, for feedback

// #prediction has aria-busy="true" while an answer is still to come (drawing, a request
// on its way or waiting to be sent): for screen readers, and for automation to wait on.
function updateBusy() {
  const busy = String(drawing || inFlight || wanted || uploading);
  prediction.setAttribute("aria-busy", busy);
  numberText.setAttribute("aria-busy", busy);
}

// --- the bar chart: ten bars, built once --------------------------------------------
const bars = [];
for (let digit = 0; digit < 10; digit++) {
  const column = document.createElement("div");
  column.className = "bar";
  column.innerHTML = '<span class="value"></span><span class="track"><span class="fill"></span></span>' +
                     `<span class="label">${digit}</span>`;
  probabilities.appendChild(column);
  bars.push({ column, fill: column.querySelector(".fill"), value: column.querySelector(".value") });
}

function showProbabilities(values, best) {
  bars.forEach((bar, digit) => {
    const p = values ? values[digit] : 0;
    bar.fill.style.height = `${(p * 100).toFixed(1)}%`;
    bar.value.textContent = values && p >= 0.005 ? `${Math.round(p * 100)}` : "";
    bar.column.classList.toggle("best", values !== null && digit === best);
    bar.column.title = values ? `${digit}: ${(p * 100).toFixed(1)}%` : "";
  });
}

// --- drawing ------------------------------------------------------------------------
function resetCanvas() {
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#111";
  context.fillStyle = "#111";
  context.lineCap = "round";
  context.lineJoin = "round";
  // MNIST strokes are about a tenth of the digit's height: a tenth of the pad reads well.
  context.lineWidth = canvas.height / 14;
}

function canvasPoint(event) {
  const box = canvas.getBoundingClientRect();
  return { x: (event.clientX - box.left) * canvas.width / box.width,
           y: (event.clientY - box.top) * canvas.height / box.height };
}

function dot(point) {
  context.beginPath();
  context.arc(point.x, point.y, context.lineWidth / 2, 0, 2 * Math.PI);
  context.fill();
}

function lineTo(point) {
  context.beginPath();
  context.moveTo(lastPoint.x, lastPoint.y);
  context.lineTo(point.x, point.y);
  context.stroke();
  lastPoint = point;
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = true;
  hasInk = true;
  lastPoint = canvasPoint(event);
  dot(lastPoint);
  message.textContent = "";
  updateBusy();
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  event.preventDefault();
  // Pens and fast fingers deliver several points per frame: draw them all.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const each of events.length ? events : [event]) lineTo(canvasPoint(each));
  if (performance.now() - lastSent >= PREDICT_EVERY_MS) requestPrediction();
  else { wanted = true; updateBusy(); }
});

function endStroke(event) {
  if (!drawing) return;
  drawing = false;
  if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
  requestPrediction();
  updateBusy();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function clearAll() {
  generation++;
  resetCanvas();
  hasInk = false;
  wanted = false;
  upload.value = "";
  message.textContent = "";
  showEmpty("Draw a digit");
  showNoNumber("Write a number");
  updateBusy();
}
clearButton.addEventListener("click", clearAll);

for (const [name, button] of Object.entries(modeButtons)) {
  button.addEventListener("click", () => {
    if (mode === name) return;
    mode = name;
    for (const [other, each] of Object.entries(modeButtons)) each.setAttribute("aria-checked", String(other === mode));
    document.body.classList.toggle("number-mode", mode === "number");
    numberSection.hidden = mode !== "number";
    const [heading, lede] = HEADINGS[mode];
    document.getElementById("heading").textContent = heading;
    document.getElementById("lede").textContent = lede;
    document.title = `${heading} · mnist-digits`;
    canvas.width = mode === "number" ? NUMBER_WIDTH * canvas.height : canvas.height;  // also clears it
    clearAll();
  });
}

// --- asking the server ----------------------------------------------------------------
function requestPrediction() {
  if (!hasInk) return;
  if (inFlight) { wanted = true; updateBusy(); return; }
  wanted = false;
  inFlight = true;
  updateBusy();
  lastSent = performance.now();
  const sentFor = generation;
  const small = document.createElement("canvas");
  small.height = SEND_SIDE;
  small.width = SEND_SIDE * canvas.width / canvas.height;
  const smallContext = small.getContext("2d");
  smallContext.imageSmoothingQuality = "high";
  smallContext.drawImage(canvas, 0, 0, small.width, small.height);
  small.toBlob(async (png) => {
    try {
      await predict(png, { "Content-Type": "image/png" }, sentFor,
                    { left: 0, top: 0, width: 1, height: 1, pixelsWide: small.width, pixelsHigh: small.height });
    } finally {
      inFlight = false;
      if (wanted && generation === sentFor) requestPrediction();
      else wanted = false;
      updateBusy();
    }
  }, "image/png");
}

// `placed`: where the image sent lies on the pad (left, top, width, height in fractions
// of the pad) and its size in pixels, to put the boxes over it; none if it is not shown.
async function predict(body, headers, sentFor, placed) {
  let response, answer;
  const number = mode === "number";
  try {
    response = await fetch(number ? "/api/read" : "/api/predict", { method: "POST", body, headers });
    answer = await response.json();
  } catch (error) {
    if (generation === sentFor) showError("The server did not answer; is it still running?");
    return;
  }
  if (generation !== sentFor) return;  // cleared meanwhile
  if (response.ok) {
    if (number) {
      showNumber(answer, placed);
      offerFeedback(null);  // corrections are of single digits
    } else {
      showAnswer(answer);
      offerFeedback(body instanceof FormData ? body.get("file") : body, answer.digit);
    }
  }
  else if (response.status === 422) {
    // Early in a stroke there is too little ink to read: not worth a warning yet.
    const show = number ? showNoNumber : showEmpty;
    if (drawing || wanted) show("Keep drawing…");
    else show(number ? "No number found" : "No digit found", answer.error);
  }
  else showError(answer.error || `The server said ${response.status}.`);
}

function showAnswer(answer) {
  const percent = percentOf(answer.confidence);
  prediction.className = answer.unsure ? "unsure" : "sure";
  prediction.innerHTML = "";
  const digit = document.createElement("span");
  digit.className = "digit";
  digit.textContent = String(answer.digit);
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = answer.unsure ? `${percent}% · unsure` : `${percent}% sure`;
  prediction.append(digit, " ", detail);
  showProbabilities(answer.probabilities, answer.digit);
  seen.src = answer.image;
  seen.classList.add("shown");
  message.textContent = "";
}

function showEmpty(text, detail) {
  offerFeedback(null);
  prediction.className = "empty";
  prediction.textContent = text;
  showProbabilities(null);
  seen.removeAttribute("src");
  seen.classList.remove("shown");
  message.textContent = detail || "";
}

function percentOf(confidence) {
  return confidence >= 0.999 ? ">99.9" : (confidence * 100).toFixed(confidence >= 0.995 ? 1 : 0);
}

function showNumber(answer, placed) {
  numberText.className = answer.unsure ? "unsure" : "sure";
  numberText.textContent = answer.text;
  numberDigits.replaceChildren(...answer.digits.map((digit) => {
    const item = document.createElement("li");
    const image = document.createElement("img");
    image.src = digit.image;
    image.alt = `the 28 by 28 image of digit ${digit.digit}`;
    const value = document.createElement("span");
    value.className = digit.unsure ? "value unsure" : "value";
    value.textContent = String(digit.digit);
    const confidence = document.createElement("span");
    confidence.className = "confidence";
    confidence.textContent = `${percentOf(digit.confidence)}%${digit.unsure ? " · unsure" : ""}`;
    item.append(image, value, confidence);
    return item;
  }));
  // Boxes over the pad: the answer's boxes are in the sent image's pixels.
  boxes.replaceChildren(...(placed ? answer.digits : []).map((digit) => {
    const [x0, y0, x1, y1] = digit.box;
    const across = placed.width / placed.pixelsWide, down = placed.height / placed.pixelsHigh;
    const box = document.createElement("div");
    box.className = digit.unsure ? "box unsure" : "box";
    box.style.left = `${100 * (placed.left + x0 * across)}%`;
    box.style.top = `${100 * (placed.top + y0 * down)}%`;
    box.style.width = `${100 * (x1 - x0) * across}%`;
    box.style.height = `${100 * (y1 - y0) * down}%`;
    return box;
  }));
  message.textContent = "";
}

function showNoNumber(text, detail) {
  numberText.className = "empty";
  numberText.textContent = text;
  numberDigits.replaceChildren();
  boxes.replaceChildren();
  message.textContent = detail || "";
}

function showError(text) {
  message.textContent = text;
}

// --- uploading a photo ----------------------------------------------------------------
upload.addEventListener("change", async () => {
  const file = upload.files && upload.files[0];
  if (!file) return;
  generation++;
  const sentFor = generation;
  uploading = true;
  updateBusy();
  try {
    const placed = await showPhoto(file);
    message.textContent = "Reading the photo…";
    let body = file;
    if (file.size > MAX_UPLOAD_BYTES) {
      const shrunk = await shrink(file);  // a phone photo is often over the limit: send it smaller
      if (!shrunk) { showError("That photo is over 4 MiB and this browser cannot shrink it."); return; }
      body = shrunk.blob;
      if (placed) Object.assign(placed, { pixelsWide: shrunk.width, pixelsHigh: shrunk.height });
    }
    const form = new FormData();
    form.append("file", body, file.name || "photo");
    await predict(form, {}, sentFor, placed);
  } finally {
    uploading = false;
    updateBusy();
  }
});

// Show the photo on the pad (fitted, on white) so the page shows what was read; returns
// where it lies on the pad (see `predict`), or null if this browser cannot decode it.
async function showPhoto(file) {
  try {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    resetCanvas();
    const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
    const width = bitmap.width * scale, height = bitmap.height * scale;
    const left = (canvas.width - width) / 2, top = (canvas.height - height) / 2;
    context.drawImage(bitmap, left, top, width, height);
    hasInk = false;  // drawing on top starts a new drawing from the photo
    return { left: left / canvas.width, top: top / canvas.height, width: width / canvas.width,
             height: height / canvas.height, pixelsWide: bitmap.width, pixelsHigh: bitmap.height };
  } catch (error) {
    return null;  // Not decodable here (e.g. HEIC in some browsers): the server still gets the file.
  }
}

async function shrink(file) {
  try {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const scale = Math.min(1, UPLOAD_SIDE / Math.max(bitmap.width, bitmap.height));
    const small = document.createElement("canvas");
    small.width = Math.round(bitmap.width * scale);
    small.height = Math.round(bitmap.height * scale);
    small.getContext("2d").drawImage(bitmap, 0, 0, small.width, small.height);
    const blob = await new Promise((resolve) => small.toBlob(resolve, "image/jpeg", 0.92));
    return blob && { blob, width: small.width, height: small.height };
  } catch (error) {
    return null;
  }
}

// --- feedback: the person says whether the answer was right ---------------------------
// Shown only when the server collects feedback (its /api/feedback/summary answers);
// nothing is sent until a button is pressed.
for (let digit = 0; digit < 10; digit++) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(digit);
  button.dataset.digit = String(digit);
  button.disabled = true;
  button.addEventListener("click", () => sendFeedback(digit));
  corrections.appendChild(button);
}
rightButton.addEventListener("click", () => answered && sendFeedback(answered.digit));

function feedbackButtons() {
  return [rightButton, ...corrections.querySelectorAll("button")];
}

function offerFeedback(drawing, digit) {
  answered = drawing ? { drawing, digit } : null;
  feedbackButtons().forEach((button) => { button.disabled = !answered; });
  feedbackStatus.textContent = "";
}

async function sendFeedback(label) {
  const { drawing, digit } = answered;
  feedbackButtons().forEach((button) => { button.disabled = true; });  // once per answer
  const form = new FormData();
  form.append("file", drawing, "drawing.png");
  form.append("label", String(label));
  form.append("predicted", String(digit));
  feedbackStatus.textContent = "Sending…";
  try {
    const response = await fetch("/api/feedback", { method: "POST", body: form });
    const reply = await response.json();
    if (!response.ok) throw new Error(reply.error || `The server said ${response.status}.`);
    feedbackStatus.textContent = reply.duplicate
      ? "This drawing was already stored; thank you."
      : `Stored as a ${label}; thank you.`;
  } catch (error) {
    feedbackStatus.textContent = `Not stored: ${error.message}`;
  }
}

async function showFeedbackIfCollected() {
  try {
    feedback.hidden = !(await fetch("/api/feedback/summary")).ok;
  } catch (error) {
    feedback.hidden = true;
  }
}

// --- start ------------------------------------------------------------------------------
async function showModel() {
  const info = document.getElementById("model-info");
  try {
    const model = await (await fetch("/api/model")).json();
    const parts = [`Model ${model.name}`];
    if (model.parameters) parts.push(`${model.parameters.toLocaleString("en")} parameters`);
    if (model.test_accuracy) parts.push(`${(model.test_accuracy * 100).toFixed(2)}% on the MNIST test set`);
    info.textContent = parts.join(" · ");
  } catch (error) {
    info.textContent = "Model information unavailable";
  }
}

resetCanvas();
showProbabilities(null);
updateBusy();
showModel();
showFeedbackIfCollected();
