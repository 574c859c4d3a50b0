// Prometheus's text exposition format (what GET /metrics answers) read into samples: {name, labels, value}.
// Comment lines (# HELP, # TYPE) and blank lines are skipped; values are numbers, NaN and ±Inf included.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
const ESCAPED = { "\\\\": "\\", '\\"': '"', "\\n": "\n" };

export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || "").matchAll(LABEL)) {
      labels[key] = value.replace(/\\[\\"n]/g, (e) => ESCAPED[e]);
    }
    samples.push({ name: match[1], labels, value: number(match[3]) });
  }
  return samples;
}

function number(text) {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text); // "NaN" too
}
