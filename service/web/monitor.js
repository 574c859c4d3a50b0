// The monitor page (/monitor): what each model version answers, against its reference (its answers on its
// validation data), live. Every REFRESH_MS it reads GET /metrics (open; Prometheus's text format, summed over
// the service's workers): classes, confidence, drift, inputs outside the reference, requests by route, shadow
// comparisons. GET /metadata (token-protected when tokens are configured) adds each version's roles and the
// reference's confidence shares, every METADATA_MS. Counts are since the service started.

import { ApiError, call } from "./api.js";
import { parseMetrics } from "./prometheus.js";
import { drawShares } from "./shares.js";
import { initTokenDialog } from "./token.js";

const REFRESH_MS = 3000;
const METADATA_MS = 30_000;
const ROLE_ORDER = ["default", "canary", "shadow"];
const OUTCOMES = ["agree", "disagree", "failed", "skipped"];
const $ = (id) => document.getElementById(id);
const count = new Intl.NumberFormat("en");
const percent = (part, whole = 1) => (whole ? `${((100 * part) / whole).toFixed(1)} %` : "–");
const score = (v) => v.toFixed(3);

let samples = null; // the last /metrics, parsed
let metadata = null; // the last /metadata
let metadataNote = ""; // why roles are missing, when /metadata was refused
let metadataTimer = 0;
let metadataBusy = false;
const rechecked = new Set(); // versions in the metrics that /metadata did not list, asked about again once
let shown = ""; // what the view shows (JSON), so that an unchanged refresh leaves the DOM alone

// ------------------------------------------------------------------------------------------ reading

async function readMetrics() {
  try {
    const response = await fetch("/metrics", { cache: "no-store" });
    if (!response.ok) throw new Error(`it answered HTTP ${response.status}`);
    samples = parseMetrics(await response.text());
    $("monitor-error").textContent = "";
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}, every ${REFRESH_MS / 1000} s.`;
    draw();
  } catch (e) {
    $("monitor-error").textContent = `GET /metrics failed (${e.message}); trying again every ${REFRESH_MS / 1000} s.`;
  }
  setTimeout(readMetrics, REFRESH_MS);
}

async function readMetadata() {
  clearTimeout(metadataTimer);
  metadataBusy = true;
  let again = true;
  try {
    metadata = await call("/metadata");
    metadataNote = "";
  } catch (e) {
    metadataNote = metadata ? `The roles are as last read: GET /metadata now fails: ${e.message}`
      : `The roles are read from the metrics instead, and the confidence reference is missing: ${e.message}`;
    again = !(e instanceof ApiError && e.status === 401); // the token dialog was cancelled: ask again on reload
  }
  metadataBusy = false;
  draw();
  if (again) metadataTimer = setTimeout(readMetadata, METADATA_MS);
}

// --------------------------------------------------------------------------------------- the numbers

function blank(model, tag) {
  return {
    model, tag, roles: [], loaded: null, reference: null, inputs: 0, outside: 0, low: 0, drift: NaN, threshold: NaN,
    classes: null, expected: null, buckets: [], requests: { default: 0, canary: 0, pinned: 0, error: 0 },
    shadow: { agree: 0, disagree: 0, failed: 0, skipped: 0, of: [] }, seenAs: new Set(),
  };
}

// [{name, versions: [...]}] from the samples and, when known, the metadata.
function collect() {
  const models = new Map();
  const get = (model, tag) => {
    if (!models.has(model)) models.set(model, new Map());
    const versions = models.get(model);
    if (!versions.has(tag)) versions.set(tag, blank(model, tag));
    return versions.get(tag);
  };
  for (const [model, info] of Object.entries(metadata?.models || {})) {
    for (const [tag, roles] of Object.entries(info.roles)) {
      Object.assign(get(model, tag), { roles, loaded: true, reference: info.versions[tag]?.reference || null });
    }
  }
  for (const { name, labels, value } of samples) {
    if (!name.startsWith("model_") || !labels.model || !labels.version) continue;
    const v = get(labels.model, labels.version);
    switch (name) {
      case "model_inputs_total": v.inputs = value; break;
      case "model_inputs_outside_reference_total": v.outside = value; break;
      case "model_low_confidence_total": v.low = value; break;
      case "model_prediction_drift": v.drift = value; break;
      case "model_drift_threshold": v.threshold = value; break;
      case "model_predictions_total": (v.classes ||= Array(10).fill(0))[Number(labels.class)] = value; break;
      case "model_reference_class_share": (v.expected ||= Array(10).fill(0))[Number(labels.class)] = value; break;
      case "model_prediction_confidence_bucket": v.buckets.push([Number(labels.le), value]); break;
      case "model_requests_total":
        v.requests[labels.route] = (v.requests[labels.route] || 0) + value;
        if (labels.outcome === "error") v.requests.error += value;
        v.seenAs.add(labels.route);
        break;
      case "model_shadow_rows_total": {
        const s = get(labels.model, labels.shadow_version);
        s.shadow[labels.outcome] = (s.shadow[labels.outcome] || 0) + value;
        if (!s.shadow.of.includes(labels.version)) s.shadow.of.push(labels.version);
        s.seenAs.add("shadow");
        break;
      }
    }
  }
  return [...models].sort(([a], [b]) => a.localeCompare(b)).map(([name, versions]) => {
    const list = [...versions.values()];
    for (const v of list) {
      if (!metadata) v.roles = ROLE_ORDER.filter((r) => v.seenAs.has(r)); // inferred from the metrics
      else if (v.loaded === null) v.loaded = false; // counted, but no longer served
    }
    const rank = (v) => (v.loaded === false ? 9 : Math.min(...v.roles.map((r) => ROLE_ORDER.indexOf(r)), 3));
    list.sort((a, b) => rank(a) - rank(b));
    const unaddressed = list.reduce((n, v) => n + v.requests.default + v.requests.canary, 0);
    return { name, unaddressed, versions: list, digits: list.some(isDigits) };
  });
}

// ---------------------------------------------------------------------------------------- the view

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

function draw() {
  if (!samples) return;
  $("metadata-note").textContent = metadataNote;
  const models = collect();
  // A version /metadata did not list: new since it was read (ask again, once), or no longer served.
  const unlisted = models.flatMap((m) => m.versions).filter((v) => v.loaded === false)
    .map((v) => `${v.model} ${v.tag}`).filter((key) => !rechecked.has(key));
  if (unlisted.length && !metadataBusy) {
    unlisted.forEach((key) => rechecked.add(key));
    readMetadata();
  }
  const json = JSON.stringify(models, (k, v) => (v instanceof Set ? [...v] : v));
  $("monitor").dataset.roles = metadata ? "metadata" : "metrics"; // where the roles shown come from
  if (json === shown) return;
  shown = json;
  $("monitor").setAttribute("aria-busy", "false");
  $("monitor").replaceChildren(...(models.length ? models.map(modelSection)
    : [h("p", { class: "help" }, "No model has answered yet.")]));
}

// A digit model's version: its answers are classes (a thermometer's are readings).
function isDigits(v) {
  return Boolean(v.classes || v.expected || v.reference?.classes);
}

function modelSection(model) {
  const id = `model-${model.name}`;
  const kind = model.digits ? " digits" : "";
  return h("section", { class: `panel model${kind}`, "aria-labelledby": id, "data-model": model.name },
    h("h2", { id }, model.name),
    ...model.versions.map((v) => versionArticle(v, model)));
}

function versionArticle(v, model) {
  const id = `version-${v.model}-${v.tag}`;
  const roles = v.loaded === false ? ["not served now"] : v.roles;
  const digits = isDigits(v);
  return h("article", { class: "version", "aria-labelledby": id, "data-version": v.tag },
    h("h3", { id }, `version ${v.tag} `, ...roles.map((r) => h("span", { class: "role" }, r))),
    v.reference ? h("p", { class: "help" }, `Reference: ${v.reference.data}.`) : null,
    h("div", { class: "version-body" },
      h("div", {}, figures(v, digits), drift(v, digits), v.roles.includes("canary") ? canary(v, model) : null,
        v.roles.includes("shadow") || v.shadow.of.length ? shadow(v) : null),
      digits ? classChart(v) : null,
      digits ? confidenceChart(v) : null));
}

function figure(name, value, detail) {
  return h("div", {}, h("dt", {}, name), h("dd", { "data-figure": name }, value),
    detail ? h("dd", { class: "help" }, detail) : null);
}

function figures(v, digits) {
  const routes = ["default", "canary", "pinned"].filter((r) => v.requests[r])
    .map((r) => `${count.format(v.requests[r])} ${r}`);
  const requests = routes.length ? routes.join(", ") + `; ${count.format(v.requests.error)} failed` : null;
  const range = v.reference?.range ? `readings outside ${v.reference.range.join(" to ")}` : null;
  const low = v.reference?.thresholds?.low_confidence;
  return h("dl", { class: "figures" },
    figure("answers", count.format(v.inputs), v.roles.includes("shadow") ? "its shadow copies included" : null),
    figure("requests", count.format(v.requests.default + v.requests.canary + v.requests.pinned), requests),
    figure("outside the reference", `${count.format(v.outside)} (${percent(v.outside, v.inputs)})`,
      digits ? "images whose ink or frame is not MNIST-like" : range),
    digits ? figure("low confidence", `${count.format(v.low)} (${percent(v.low, v.inputs)})`,
      low ? `top probability below ${low}` : null) : null);
}

function drift(v, digits) {
  const what = digits ? "PSI of the predicted digits" : "Kolmogorov-Smirnov statistic of the readings";
  const window = v.reference?.thresholds?.window;
  const known = Number.isFinite(v.drift), over = known && v.drift > v.threshold;
  const needs = window ? count.format(window) : "enough";
  const verdict = !known ? ` (not scored yet: a score needs ${needs} answers in one worker)`
    : over ? ": above it, the answers are not like the reference's" : ": below it";
  const gauge = h("div", { class: "gauge", "aria-hidden": "true" },
    h("span", { class: "fill" }), h("span", { class: "mark" }));
  if (Number.isFinite(v.threshold)) {
    const max = Math.max(2 * v.threshold, known ? v.drift : 0);
    gauge.firstChild.style.width = `${known ? (100 * v.drift) / max : 0}%`;
    gauge.lastChild.style.left = `${(100 * v.threshold) / max}%`;
  }
  return h("div", { class: "drift", "data-state": !known ? "pending" : over ? "alert" : "ok" },
    h("p", {}, h("strong", {}, "Drift "), `(${what}): `,
      h("strong", { "data-figure": "drift" }, known ? score(v.drift) : "–"), known ? "" : verdict, "; alert above ",
      h("span", { "data-figure": "drift threshold" }, Number.isFinite(v.threshold) ? score(v.threshold) : "–"),
      known ? verdict : "", "."),
    gauge);
}

function canary(v, model) {
  const share = percent(v.requests.canary, model.unaddressed);
  const of = `${count.format(v.requests.canary)} of ${count.format(model.unaddressed)}`;
  return h("p", { class: "canary" }, h("strong", {}, "Canary: "), model.unaddressed
    ? ["answered ", h("strong", { "data-figure": "canary share" }, share),
      ` of the requests that named no version (${of}).`]
    : "no request that named no version yet.");
}

function shadow(v) {
  const s = v.shadow, compared = s.agree + s.disagree, all = OUTCOMES.reduce((n, o) => n + s[o], 0);
  const of = s.of.length ? ` of ${s.of.join(", ")}` : "";
  const stack = h("div", { class: "stack", "aria-hidden": "true" });
  for (const o of OUTCOMES) {
    const part = h("span", { class: o });
    part.style.width = `${all ? (100 * s[o]) / all : 0}%`;
    stack.append(part);
  }
  return h("div", { class: "shadow" },
    h("p", {}, h("strong", {}, `Shadow${of}: `), compared ? ["agrees on ", h("strong", { "data-figure": "agreement" },
      percent(s.agree, compared)), ` of the rows compared (${count.format(s.agree)} of ${count.format(compared)}).`]
      : "no row compared yet."),
    stack,
    h("ul", { class: "outcomes", "aria-label": "Rows copied to the shadow, by outcome" },
      ...OUTCOMES.map((o) => h("li", { "data-outcome": o }, h("span", { class: `key ${o}` }), `${o} `,
        h("span", { "data-figure": o }, count.format(s[o]))))));
}

// A figure with an SVG chart whose text alternative (its <desc>) lists every bar.
function chart(caption, paint, describe, referenced) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  const title = document.createElementNS(svg.namespaceURI, "title");
  const desc = document.createElementNS(svg.namespaceURI, "desc");
  svg.setAttribute("viewBox", "0 0 320 170");
  svg.setAttribute("role", "img");
  title.textContent = caption;
  desc.textContent = describe;
  svg.append(title, desc);
  paint(svg);
  const key = (name) => h("span", {}, h("span", { class: `key ${name}` }), name);
  return h("figure", { class: "shares" }, svg,
    h("figcaption", {}, caption, h("span", { class: "legend" }, key("answers"), referenced ? key("reference") : null)));
}

function classChart(v) {
  const counts = v.classes || Array(10).fill(0);
  const total = counts.reduce((a, b) => a + b, 0);
  const labels = counts.map((_, d) => String(d));
  const describe = `Answers by digit, ${count.format(total)} in all: ` + counts.map((n, d) =>
    `${d}: ${count.format(n)} (${percent(n, total)}${v.expected ? `; reference ${percent(v.expected[d])}` : ""})`)
    .join(", ") + ".";
  const c = chart("Answers by digit", (svg) => drawShares(svg, { counts, reference: v.expected, labels }), describe,
    Boolean(v.expected));
  c.classList.add("classes");
  return c;
}

function confidenceChart(v) {
  // Cumulative buckets (le) into one count per bucket; the +Inf bucket above 1.0 is always empty.
  const buckets = v.buckets.filter(([le]) => Number.isFinite(le)).sort((a, b) => a[0] - b[0]);
  const confidence = v.reference?.confidence;
  const counts = buckets.length ? buckets.map(([, n], i) => n - (i ? buckets[i - 1][1] : 0))
    : Array(confidence?.shares.length || 0).fill(0);
  const edges = confidence?.edges || [0, ...buckets.map(([le]) => le)];
  const reference = confidence && confidence.shares.length === counts.length ? confidence.shares : null;
  const total = counts.reduce((a, b) => a + b, 0);
  const describe = `Answers by confidence (the top probability), ${count.format(total)} in all: ` + counts.map((n, i) =>
    `${edges[i]} to ${edges[i + 1]}: ${count.format(n)}${reference ? ` (reference ${percent(reference[i])})` : ""}`)
    .join(", ") + ".";
  const labels = edges.map((e) => String(e).replace(/^0\./, "."));
  const paint = (svg) => counts.length && drawShares(svg, { counts, reference, edges: labels });
  const c = chart("Answers by confidence", paint, describe, Boolean(reference));
  c.classList.add("confidence");
  return c;
}

// ------------------------------------------------------------------------------------------ start

initTokenDialog();
readMetrics();
readMetadata();
