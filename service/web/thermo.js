// The thermometer panel: converts the typed readings with POST /temperature and plots them
// against the training data (GET /metadata) and both models' curves.

import { call, postJSON } from "./api.js";
import { drawChart } from "./chart.js";

const MODELS = { linear: "linear", mlp: "MLP" };
const GRID = 40; // points per model curve
const $ = (id) => document.getElementById(id);

export function initThermoPanel() {
  const form = $("thermo-form");
  let training = []; // [{x: t_u, y: t_c}] from the linear model's metadata
  let marks = [];
  let curves = { key: "", list: [] };

  async function redraw() {
    if (!training.length) return;
    const xs = [...training, ...marks].map((p) => p.x);
    const lo = Math.min(...xs), hi = Math.max(...xs);
    const key = `${lo},${hi}`;
    if (curves.key !== key) { // the curves span the training data and the user's readings
      const grid = Array.from({ length: GRID }, (_, i) => lo + ((hi - lo) * i) / (GRID - 1));
      const list = await Promise.all(Object.keys(MODELS).map(async (name) => {
        const { celsius } = await postJSON("/temperature", { readings: grid, model: name });
        return { name, points: grid.map((x, i) => ({ x, y: celsius[i] })) };
      }));
      curves = { key, list };
    }
    drawChart($("chart"), { training, curves: curves.list, marks });
    describe();
  }

  // The chart's text alternative.
  function describe() {
    const f = (v) => Number(v.toFixed(2));
    let text = `Scatter plot of the ${training.length} training readings (x, unknown unit, from ` +
      `${f(Math.min(...training.map((p) => p.x)))} to ${f(Math.max(...training.map((p) => p.x)))}) against °C (y), ` +
      "with the linear model's straight line and the MLP model's curve through them.";
    if (marks.length) text += ` Your readings: ${marks.map((m) => `${f(m.x)} → ${f(m.y)} °C (${MODELS[m.name]})`).join(", ")}.`;
    $("chart-desc").textContent = text;
  }

  function showTable(readings, answers) {
    const table = $("celsius");
    const head = table.tHead.rows[0];
    head.replaceChildren(head.cells[0]);
    for (const a of answers) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = `${MODELS[a.name]} °C`;
      head.append(th);
    }
    table.tBodies[0].replaceChildren(...readings.map((r, i) => {
      const row = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = String(r);
      row.append(th);
      for (const a of answers) {
        const td = document.createElement("td");
        const value = document.createElement("data"); // the exact value, shown rounded
        value.value = String(a.celsius[i]);
        value.className = `celsius ${a.name}`;
        value.textContent = a.celsius[i].toFixed(2);
        td.append(value);
        row.append(td);
      }
      return row;
    }));
    table.hidden = false;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const chosen = new FormData(form).get("model");
    const names = chosen === "both" ? Object.keys(MODELS) : [chosen];
    // Numbers as numbers; anything else is sent as typed, and the server says what is wrong with it.
    const readings = $("readings").value.split(/[\s,]+/).filter(Boolean)
      .map((t) => (Number.isFinite(Number(t)) ? Number(t) : t));
    $("convert").disabled = true;
    try {
      const answers = await Promise.all(names.map(async (name) => ({ name, ...(await postJSON("/temperature", { readings, model: name })) })));
      $("thermo-error").textContent = "";
      showTable(readings, answers);
      marks = answers.flatMap((a) => readings.map((x, i) => ({ x, y: a.celsius[i], name: a.name })));
      await redraw();
    } catch (err) {
      $("thermo-error").textContent = err.message;
      $("celsius").hidden = true;
    } finally {
      $("convert").disabled = false;
    }
  });

  call("/metadata")
    .then(({ models }) => {
      const { t_u, t_c } = models["temperature-linear"].data;
      training = t_u.map((x, i) => ({ x, y: t_c[i] }));
      return redraw();
    })
    .catch((err) => { $("chart-desc").textContent = `No chart: ${err.message}`; });
}
