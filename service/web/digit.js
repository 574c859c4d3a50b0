// The digit panel: sends the drawing (or a chosen file) to POST /digit/image with the chosen model and shows the answer.
// Live as you draw, but gently: a drawing is sent as soon as a stroke ends, or DEBOUNCE_MS after the
// last move of a stroke still in progress, and never while a request is in flight; what changed
// meanwhile is sent when that request returns. The answer to a finished stroke is thus on screen one
// round trip after the pen lifts (tests/test_browser.py holds it under 300 ms).

import { postImage } from "./api.js";
import { createPad } from "./pad.js";

const DEBOUNCE_MS = 200;
const $ = (id) => document.getElementById(id);

export function initDigitPanel() {
  const result = $("digit-result");
  const bars = buildBars($("probabilities"));
  let timer = 0;
  let inFlight = false;
  let queued = null; // the newest source to send once the request in flight returns
  let epoch = 0; // bumped by Clear: answers to requests sent before it are dropped
  let shown = null; // the source of the answer on screen: sent again when the model changes

  const drawing = { name: "drawing.png", label: "your drawing", blob: () => pad.toPNG() };
  const pad = createPad($("pad"), (ended) => {
    clearTimeout(timer);
    timer = 0;
    if (ended) return send(drawing);
    timer = setTimeout(() => { timer = 0; send(drawing); }, DEBOUNCE_MS);
    busy();
  });

  // aria-busy: true while an answer is on its way (also what the browser test waits on).
  function busy() {
    result.setAttribute("aria-busy", String(Boolean(timer || inFlight || queued)));
  }

  async function send(source) {
    shown = source;
    if (inFlight) {
      queued = source;
      return busy();
    }
    inFlight = true;
    busy();
    const sentIn = epoch;
    try {
      const answer = await postImage(await source.blob(), source.name, $("digit-model").value);
      if (sentIn === epoch) show(answer, source.label);
    } catch (e) {
      if (sentIn === epoch) showError(e.message);
    } finally {
      inFlight = false;
      const next = queued;
      queued = null;
      if (next) send(next);
      else busy();
    }
  }

  function show(answer, label) {
    $("digit").textContent = String(answer.digit);
    $("confidence").textContent = `confidence ${percent(answer.confidence)}`;
    $("digit-source").textContent = `for ${label}, by ${answer.model}`;
    $("digit-error").textContent = "";
    answer.probabilities.forEach((p, d) => bars[d](p, d === answer.digit));
    drawSeen(answer.pixels);
  }

  function showError(message) {
    reset();
    $("digit-error").textContent = message;
  }

  function reset() {
    $("digit").textContent = "–";
    $("confidence").textContent = "";
    $("digit-source").textContent = "";
    $("digit-error").textContent = "";
    bars.forEach((set) => set(0, false));
    drawSeen(null);
  }

  $("clear").addEventListener("click", () => {
    clearTimeout(timer);
    timer = 0;
    queued = null;
    shown = null;
    epoch += 1;
    pad.clear();
    $("file").value = "";
    reset();
    busy();
  });

  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (!file) return;
    clearTimeout(timer);
    timer = 0;
    queued = null;
    epoch += 1; // an answer still on its way for the old drawing is not shown
    pad.clear(); // the answer is for the file now, not for an old drawing
    send({ name: file.name, label: file.name, blob: async () => file });
  });

  $("digit-model").addEventListener("change", () => {
    if (shown && !timer) send(shown); // a pending drawing is sent with the new model anyway
  });

  reset();
}

function percent(p) {
  return `${(100 * p).toFixed(1)} %`;
}

// Ten rows "d [bar] p %"; returns one setter per digit.
function buildBars(list) {
  return Array.from({ length: 10 }, (_, d) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    const track = document.createElement("span");
    const fill = document.createElement("span");
    const value = document.createElement("span");
    label.className = "digit";
    label.textContent = String(d);
    track.className = "track";
    fill.className = "fill";
    value.className = "value";
    track.append(fill);
    item.append(label, track, value);
    list.append(item);
    return (p, top) => {
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      value.textContent = percent(p);
      item.classList.toggle("top", top);
    };
  });
}

// The 28x28 grey levels the model saw, drawn into the small canvas that CSS shows upscaled.
function drawSeen(pixels) {
  const canvas = $("seen");
  const ctx = canvas.getContext("2d");
  if (!pixels) {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.drawn = "false";
    return;
  }
  const image = ctx.createImageData(28, 28);
  pixels.flat().forEach((v, i) => {
    image.data.set([v, v, v, 255], 4 * i);
  });
  ctx.putImageData(image, 0, 0);
  canvas.dataset.drawn = "true";
}
