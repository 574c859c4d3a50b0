// The drawing pad: pointer events (mouse, pen, touch) draw round black strokes on a white canvas.
// The server inverts light backgrounds, crops to the ink and fits it into 20x20 like MNIST, so a
// stroke about a tenth of the digit's height ends up like an MNIST stroke (2-3 px of 20). 22 px:
// drawn 1, 7, 0, 4 and 2 from 95 to 190 px tall were all recognised (confidence >= 0.95) with
// 12-28 px strokes; 34 px and more blur small digits, 8 px weakens large ones.
// onChange(ended) is called on every change to the drawing; ended is true when a stroke has just ended.

export const STROKE = 22;

export function createPad(canvas, onChange) {
  const ctx = canvas.getContext("2d");
  let last = null; // the previous point of the stroke in progress, null between strokes
  let empty = true;

  function clear() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    empty = true;
  }

  // Pointer position in canvas pixels (the canvas is shown smaller on narrow screens).
  function at(e) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - box.left) * canvas.width) / box.width,
      y: ((e.clientY - box.top) * canvas.height) / box.height,
    };
  }

  function line(from, to) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
    line(last, last); // a tap leaves a dot
    empty = false;
    onChange(false);
    e.preventDefault();
  });

  canvas.addEventListener("pointermove", (e) => {
    if (last === null) return;
    // Coalesced events: fast strokes stay smooth instead of becoming polygons.
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const each of events.length ? events : [e]) {
      const p = at(each);
      line(last, p);
      last = p;
    }
    onChange(false);
  });

  const end = () => {
    if (last === null) return;
    last = null;
    onChange(true);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  clear();
  return {
    clear,
    isEmpty: () => empty,
    toPNG: () => blobOf(canvas.toDataURL("image/png")),
  };
}

// The drawing as a PNG Blob, encoded at once. Not canvas.toBlob(): Chromium encodes that in an idle
// task, and right after pointer input it grants no idle period for about 1.2 s, so the encoding only
// starts when its fallback timer fires, 1 s later (4 s on Android). toDataURL() encodes the 280x280
// drawing synchronously in 1-2 ms. (fetch(dataURL) would do the decoding, but the page's CSP allows
// connect-src 'self' only.)
function blobOf(dataURL) {
  const [head, base64] = dataURL.split(",");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: head.slice("data:".length, head.indexOf(";")) });
}
