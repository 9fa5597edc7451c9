// Charts of the current cohort, drawn with Vega-Lite (declarative specs; docs/dashboard.md).
// Every chart has a table of the same numbers under it. Noisy values carry error bars (their
// 95 % interval); suppressed cells are labelled "<k", never drawn as 0 or left blank. At a hub
// each site is drawn side by side with the total.

import { element } from "./filters.js";
import { countText, valueText } from "./format.js";
import { labelOf } from "./vocabulary.js";

const CHARTS = {
  age: { label: "Age histogram" },
  measurement: { label: "Measurement histogram" },
  modality: { label: "Modalities (bars)" },
  sex: { label: "Sex (bars)" },
  finding_type: { label: "Finding types (bars)" },
  qualitative: { label: "Qualitative values (bars)" },
  crosstab: { label: "Sex by age (heat map)" },
};

function aggregateOf(kind, options) {
  switch (kind) {
    case "age":
      return { kind: "histogram", by: { kind: "bins", of: "age", start: 0, stop: 100, width: 10 } };
    case "measurement":
      return {
        kind: "histogram",
        by: { kind: "bins", of: "measurement", concept: options.concept, unit: options.unit, start: Number(options.start), stop: Number(options.stop), width: Number(options.width) },
      };
    case "qualitative":
      return { kind: "histogram", by: { kind: "category", name: "qualitative", concept: options.qualitative } };
    case "crosstab":
      return {
        kind: "crosstab",
        rows: { kind: "category", name: "sex" },
        columns: { kind: "bins", of: "age", start: 0, stop: 100, width: 20 },
      };
    default:
      return { kind: "histogram", by: { kind: "category", name: kind } };
  }
}

/** One row per (site, cell): what the chart and its table show. */
function rowsOf(answer, hub) {
  const parts = hub
    ? [
        ...(answer.sites || []).map((site) => ({ name: site.name, answer: site.answer, status: site.status, error: site.error })),
        { name: "All sites", answer, status: "ok" },
      ]
    : [{ name: "This site", answer, status: "ok" }];
  const rows = [];
  for (const part of parts) {
    if (!part.answer) {
      rows.push({ site: part.name, label: "(no answer)", row: "", text: part.status === "timeout" ? "timed out" : part.status, count: null });
      continue;
    }
    const k = part.answer.min_cell_size || (part.answer.threshold ? Math.ceil(part.answer.threshold) : 10);
    for (const cell of part.answer.cells || []) {
      const label = valueText(cell.value ?? cell.column, (v) => (typeof v === "string" && v.includes(":") ? labelOf(v) : null));
      const row = cell.row !== undefined ? valueText(cell.row) : "";
      const text = countText(cell, k);
      const count = cell.count ?? null;
      const interval = Array.isArray(cell.interval) ? cell.interval : cell.lower != null ? [cell.lower, cell.upper ?? cell.lower] : null;
      rows.push({
        site: part.name,
        label,
        row,
        text,
        count,
        low: interval ? interval[0] : null,
        high: interval ? interval[1] : null,
        suppressed: count == null,
      });
    }
  }
  return rows;
}

function specOf(kind, rows, hub) {
  const order = [...new Set(rows.map((r) => r.label))];
  const base = { $schema: "https://vega.github.io/schema/vega-lite/v6.json", data: { values: rows }, width: hub ? 520 : 440, height: 240 };
  if (kind === "crosstab") {
    const layers = heatLayers(order, [...new Set(rows.map((r) => r.row))]);
    if (!hub) return { ...base, width: 360, height: 120, ...layers };
    const { $schema, data } = base;
    return { $schema, data, facet: { column: { field: "site", title: null } }, spec: { width: 260, height: 120, ...layers } };
  }
  const x = { field: "label", type: "nominal", sort: order, title: null, axis: { labelAngle: -30 } };
  const offset = hub ? { xOffset: { field: "site" }, color: { field: "site", title: "Site" } } : {};
  return {
    ...base,
    layer: [
      { mark: "bar", encoding: { x, y: { field: "count", type: "quantitative", title: "Patients" }, ...offset } },
      {
        mark: { type: "rule", color: "black" },
        transform: [{ filter: "datum.low != null" }],
        encoding: { x, y: { field: "low", type: "quantitative" }, y2: { field: "high" }, ...(hub ? { xOffset: { field: "site" } } : {}) },
      },
      {
        mark: { type: "text", dy: -6, fontSize: 11 },
        transform: [{ filter: "datum.suppressed" }],
        encoding: { x, y: { datum: 0 }, text: { field: "text" }, ...(hub ? { xOffset: { field: "site" } } : {}) },
      },
    ],
  };
}

function heatLayers(columns, rows) {
  const x = { field: "label", type: "nominal", sort: columns, title: "Age" };
  const y = { field: "row", type: "nominal", sort: rows, title: "Sex" };
  return {
    layer: [
      { mark: "rect", encoding: { x, y, color: { field: "count", type: "quantitative", title: "Patients", scale: { scheme: "blues" } } } },
      { mark: { type: "text", fontSize: 11 }, encoding: { x, y, text: { field: "text" }, color: { value: "black" } } },
    ],
  };
}

function tableOf(title, rows, hub) {
  const crosstab = rows.some((r) => r.row);
  const head = element("tr", {});
  if (hub) head.append(element("th", { scope: "col", text: "Site" }));
  if (crosstab) head.append(element("th", { scope: "col", text: "Row" }));
  head.append(element("th", { scope: "col", text: "Value" }), element("th", { scope: "col", text: "Patients" }));
  return element(
    "table",
    { id: "chart-data" },
    element("caption", { text: `${title}: the numbers` }),
    element("thead", {}, head),
    element(
      "tbody",
      {},
      ...rows.map((r) => {
        const tr = element("tr", {});
        if (hub) tr.append(element("td", { text: r.site }));
        if (crosstab) tr.append(element("td", { text: r.row }));
        tr.append(element("th", { scope: "row", text: r.label }), element("td", { className: r.suppressed ? "number suppressed" : "number", text: r.text }));
        return tr;
      }),
    ),
  );
}

/** The chart controls: which chart, its options, and the button that asks for it. */
export function chartControls(container, context) {
  const vocabulary = context.vocabulary();
  const select = (id, label, options) => {
    const node = element("select", { id }, ...options.map((o) => element("option", { value: o.value, text: o.label })));
    return [element("div", { className: "control" }, element("label", { htmlFor: id, text: label }), node), node];
  };
  const textControl = (id, label) => {
    const node = element("input", { id, type: "text" });
    return [element("div", { className: "control" }, element("label", { htmlFor: id, text: label }), node), node];
  };
  const input = (id, label, value) => {
    const node = element("input", { id, type: "number", value: String(value), step: "any" });
    return [element("div", { className: "control" }, element("label", { htmlFor: id, text: label }), node), node];
  };
  const [kindControl, kind] = select("chart-kind", "Chart", Object.entries(CHARTS).map(([value, c]) => ({ value, label: c.label })));
  const measurements = vocabulary.measurements.flatMap((m) => (m.units || []).map((unit) => ({ value: `${m.concept}|${unit}`, label: `${labelOf(m.concept, m)} (${unit})` })));
  // Without a vocabulary: typed as "concept|unit" (the builder offers no value no site holds).
  const [measurementControl, measurement] = measurements.length
    ? select("chart-measurement", "Measurement", measurements)
    : textControl("chart-measurement", "Measurement (type it as code|unit, e.g. SCT:81827009|mm)");
  const [startControl, start] = input("chart-start", "From", 0);
  const [stopControl, stop] = input("chart-stop", "To", 40);
  const [widthControl, width] = input("chart-width", "Bin width", 4);
  const [qualitativeControl, qualitative] = vocabulary.qualitative.length
    ? select("chart-qualitative", "Property", vocabulary.qualitative.map((q) => ({ value: q.concept, label: labelOf(q.concept, q) })))
    : textControl("chart-qualitative", "Property (type it, e.g. SCT:444814009)");
  const button = element("button", { type: "button", text: "Draw chart" });
  const measurementOnly = [measurementControl, startControl, stopControl, widthControl];
  const showOptions = () => {
    for (const control of measurementOnly) control.hidden = kind.value !== "measurement";
    qualitativeControl.hidden = kind.value !== "qualitative";
  };
  kind.addEventListener("change", showOptions);
  showOptions();
  container.append(kindControl, measurementControl, startControl, stopControl, widthControl, qualitativeControl, button);

  button.addEventListener("click", async () => {
    const [concept, unit] = (measurement.value.trim() || "|").split("|");
    const request = {
      cohort: context.cohort(),
      level: "patients",
      aggregate: aggregateOf(kind.value, { concept, unit, start: start.value, stop: stop.value, width: width.value, qualitative: qualitative.value.trim() }),
    };
    const title = CHARTS[kind.value].label;
    context.say(`Asking for the ${title.toLowerCase()}…`);
    const [outcome] = await context.questions().askAll([request], context.onPlan);
    context.afterAsk();
    if (!outcome.answer) {
      context.say(`The ${title.toLowerCase()} was not drawn: ${outcome.notSent || outcome.error}`);
      return;
    }
    const rows = rowsOf(outcome.answer, context.hub);
    context.table.replaceChildren(tableOf(title, rows, context.hub));
    context.chart.replaceChildren();
    if (window.vegaEmbed) {
      const spec = specOf(kind.value, rows.filter((r) => r.label !== "(no answer)"), context.hub);
      spec.title = title;
      spec.description = `${title}; the same numbers are in the table below.`;
      await window.vegaEmbed(context.chart, spec, { actions: false, renderer: "svg" });
      const svg = context.chart.querySelector("svg");
      if (svg) {
        svg.setAttribute("role", "img");
        svg.setAttribute("aria-label", `${title}; the same numbers are in the table below`);
      }
    }
    context.say(`${title} drawn${outcome.reused ? " (answered before: cost 0)" : ""}.`);
  });
}
