// A small SVG bar chart of shares: one bar per category (its count written above it), the reference's
// share of each category marked across its bar. Pure drawing, like chart.js: it is handed numbers.
// Categories are named under their bars (`labels`) or, for a histogram, at the bars' edges (`edges`, one more).

const NS = "http://www.w3.org/2000/svg";
const W = 320, H = 170; // the SVG's viewBox; CSS scales it to its box
const M = { left: 40, right: 6, top: 16, bottom: 20 };
const COMPACT = new Intl.NumberFormat("en", { notation: "compact" });

function el(name, attributes, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The top of the y axis: a round share at or above `max`.
function top(max) {
  return [0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1].find((t) => t >= max - 1e-9) ?? 1;
}

// counts: [n]; reference: [share] or null; labels: [text] (under the bars) or edges: [text] (at their edges).
export function drawShares(svg, { counts, reference, labels, edges }) {
  for (const node of [...svg.children]) if (!["title", "desc"].includes(node.tagName)) node.remove();
  const total = counts.reduce((a, b) => a + b, 0);
  const shares = counts.map((n) => (total ? n / total : 0));
  const y1 = top(Math.max(...shares, ...(reference || []), 0.01));
  const slot = (W - M.left - M.right) / counts.length;
  const sy = (share) => H - M.bottom - (share / y1) * (H - M.top - M.bottom);

  const axes = el("g", { class: "axes" });
  for (const t of [0, y1 / 2, y1]) {
    axes.append(el("line", { class: t ? "grid" : "base", x1: M.left, y1: sy(t), x2: W - M.right, y2: sy(t) }));
    axes.append(el("text", { x: M.left - 4, y: sy(t) + 4, "text-anchor": "end" }, `${Math.round(100 * t)} %`));
  }
  const names = edges || labels;
  names.forEach((name, i) => {
    const x = M.left + slot * (edges ? i : i + 0.5);
    axes.append(el("text", { x, y: H - M.bottom + 14, "text-anchor": "middle" }, name));
  });
  svg.append(axes);

  counts.forEach((n, i) => {
    const x = M.left + slot * i;
    const y = sy(shares[i]);
    svg.append(el("rect", { class: "bar", x: x + slot * 0.15, y, width: slot * 0.7, height: H - M.bottom - y,
      "data-count": n }));
    svg.append(el("text", { class: "count", x: x + slot / 2, y: y - 3, "text-anchor": "middle" }, COMPACT.format(n)));
    if (reference) {
      const r = sy(reference[i]);
      svg.append(el("line", { class: "reference", x1: x + slot * 0.05, y1: r, x2: x + slot * 0.95, y2: r }));
    }
  });
}
