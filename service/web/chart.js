// A small SVG scatter-and-line chart: training points, model curves, the user's readings.
// Pure drawing: it is handed numbers and knows nothing of the service.

const NS = "http://www.w3.org/2000/svg";
const W = 420, H = 280; // the SVG's viewBox; CSS scales it to the panel's width
const M = { left: 44, right: 12, top: 12, bottom: 36 };

function el(name, attributes, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// About five round tick values covering [lo, hi].
function ticks(lo, hi) {
  const raw = (hi - lo) / 5 || 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function extent(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  const pad = (hi - lo) * 0.05 || Math.abs(lo) * 0.05 || 1;
  return [lo - pad, hi + pad];
}

// training: [{x, y}]; curves: [{name, points: [{x, y}]}]; marks: [{x, y, name}]
export function drawChart(svg, { training, curves, marks }) {
  for (const node of [...svg.children]) if (!["title", "desc"].includes(node.tagName)) node.remove();
  const all = [...training, ...curves.flatMap((c) => c.points), ...marks];
  const [x0, x1] = extent(all.map((p) => p.x));
  const [y0, y1] = extent(all.map((p) => p.y));
  const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const axes = el("g", { class: "axes" });
  axes.append(el("line", { x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom }));
  axes.append(el("line", { x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom }));
  for (const t of ticks(x0, x1)) {
    axes.append(el("line", { class: "grid", x1: sx(t), y1: M.top, x2: sx(t), y2: H - M.bottom }));
    axes.append(el("text", { x: sx(t), y: H - M.bottom + 14, "text-anchor": "middle" }, t));
  }
  for (const t of ticks(y0, y1)) {
    axes.append(el("line", { class: "grid", x1: M.left, y1: sy(t), x2: W - M.right, y2: sy(t) }));
    axes.append(el("text", { x: M.left - 5, y: sy(t) + 4, "text-anchor": "end" }, t));
  }
  axes.append(el("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle" }, "reading (unknown unit)"));
  axes.append(el("text", { x: 12, y: M.top + (H - M.top - M.bottom) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${M.top + (H - M.top - M.bottom) / 2})` }, "°C"));
  svg.append(axes);

  for (const curve of curves) {
    const d = curve.points.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join("");
    svg.append(el("path", { class: `model-line ${curve.name}`, "data-model": curve.name, d }));
  }
  for (const p of training) svg.append(el("circle", { class: "train-point", cx: sx(p.x), cy: sy(p.y), r: 4 }));
  for (const p of marks) {
    const [x, y] = [sx(p.x), sy(p.y)];
    svg.append(el("path", { class: `user-point ${p.name}`, d: `M${x - 5},${y}L${x},${y - 5}L${x + 5},${y}L${x},${y + 5}Z` }));
  }
}
