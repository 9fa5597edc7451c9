// The builder's controls: one fieldset per filter, every control labelled, keyboard-usable.

import { FILTER_KINDS, describe } from "./cohort.js";
import { SEXES, labelOf, optionOf } from "./vocabulary.js";

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && key !== "list") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}
export { element };

/** A labelled control: <label for> + the control. */
function labelled(id, text, control) {
  control.id = id;
  return element("div", { className: "control" }, element("label", { htmlFor: id, text }), control);
}

function select(options, value, onchange) {
  const node = element("select", { onchange: (event) => onchange(event.target.value) });
  const values = options.map((o) => o.value);
  if (value && !values.includes(value)) options = [{ value, label: labelOf(value) }, ...options];
  for (const option of options) {
    node.append(element("option", { value: option.value, text: option.label, selected: option.value === value }));
  }
  return node;
}

function numberInput(value, onchange, attributes = {}) {
  return element("input", {
    type: "number",
    inputMode: "decimal",
    value: value ?? "",
    onchange: (event) => onchange(event.target.value),
    ...attributes,
  });
}

function textInput(value, onchange, listId) {
  const node = element("input", { type: "text", value: value ?? "", onchange: (event) => onchange(event.target.value) });
  if (listId) node.setAttribute("list", listId);
  return node;
}

const options = (list) => (list || []).map(optionOf);

/** A choice from the vocabulary's list, or a free-text input when the list is empty (the
 * vocabulary is not loaded, or lists nothing): the builder never offers values no site holds. */
function choice(id, label, list, value, onchange, example, extra = []) {
  if (list && list.length) return labelled(id, label, select([...extra, ...list], value, onchange));
  return labelled(id, `${label} (type it${example ? `, e.g. ${example}` : ""})`, textInput(value, (text) => onchange(text.trim())));
}
const conceptOptions = (list) => (list || []).map((item) => ({ value: item.concept, label: labelOf(item.concept, item) }));

/**
 * The fieldset of one filter. `update(changes)` changes it (and asks again); `remove()`,
 * `move(delta)` reorder. Returns the node.
 */
export function filterFieldset(filter, position, total, vocabulary, { update, remove, move }) {
  const id = (name) => `${filter.id}-${name}`;
  const fields = [];
  switch (filter.kind) {
    case "modalities": {
      const group = element("div", { className: "checks", role: "group", "aria-label": "Modalities" });
      for (const option of options(vocabulary.modalities)) {
        const checkbox = element("input", {
          type: "checkbox",
          id: id(`m-${option.value}`),
          checked: filter.values.includes(option.value),
          onchange: (event) => {
            const values = filter.values.filter((v) => v !== option.value);
            if (event.target.checked) values.push(option.value);
            update({ values });
          },
        });
        group.append(element("span", { className: "check" }, checkbox, element("label", { htmlFor: id(`m-${option.value}`), text: option.label })));
      }
      fields.push(group);
      break;
    }
    case "sex":
      fields.push(labelled(id("value"), "Sex", select(SEXES, filter.value, (value) => update({ value }))));
      break;
    case "age":
      fields.push(labelled(id("min"), "From age (years)", numberInput(filter.min, (min) => update({ min }), { min: 0, max: 130 })));
      fields.push(labelled(id("max"), "To age (years)", numberInput(filter.max, (max) => update({ max }), { min: 0, max: 130 })));
      break;
    case "years":
      fields.push(labelled(id("from"), "From year", numberInput(filter.from, (from) => update({ from }), { min: 1900, max: 2100, step: 1 })));
      fields.push(labelled(id("to"), "To year", numberInput(filter.to, (to) => update({ to }), { min: 1900, max: 2100, step: 1 })));
      break;
    case "body_part":
      fields.push(choice(id("value"), "Body part", options(vocabulary.body_parts), filter.value, (value) => update({ value }), "CHEST"));
      break;
    case "manufacturer":
      fields.push(
        vocabulary.manufacturers.length
          ? labelled(id("value"), "Manufacturer", select(options(vocabulary.manufacturers), filter.value, (value) => update({ value })))
          : labelled(id("value"), "Manufacturer (as the images say it; * and ? match)", textInput(filter.value, (value) => update({ value }))),
      );
      break;
    case "finding":
      fields.push(choice(id("type"), "Finding type", options(vocabulary.finding_types), filter.type, (type) => update({ type }), "SCT:27925004"));
      fields.push(
        labelled(
          id("presence"),
          "Reported as",
          select(
            [
              { value: "present", label: "present" },
              { value: "absent", label: "absent" },
              { value: "any", label: "present or absent" },
            ],
            filter.presence,
            (presence) => update({ presence }),
          ),
        ),
      );
      break;
    case "measurement": {
      const measurement = vocabulary.measurements.find((m) => m.concept === filter.concept) || { units: [] };
      const anyFinding = [{ value: "", label: "any finding" }];
      fields.push(choice(id("type"), "Of finding type", options(vocabulary.finding_types), filter.type, (type) => update({ type }), "SCT:27925004; empty: any finding", anyFinding));
      fields.push(
        choice(id("concept"), "Measurement", conceptOptions(vocabulary.measurements), filter.concept, (concept) => {
          const chosen = vocabulary.measurements.find((m) => m.concept === concept);
          update({ concept, unit: chosen && chosen.units && chosen.units.length ? chosen.units[0] : filter.unit });
        }, "SCT:81827009"),
      );
      fields.push(labelled(id("min"), "At least", numberInput(filter.min, (min) => update({ min }), { step: "any" })));
      fields.push(labelled(id("max"), "At most", numberInput(filter.max, (max) => update({ max }), { step: "any" })));
      fields.push(choice(id("unit"), "Unit", (measurement.units || []).map((u) => ({ value: u, label: u })), filter.unit, (unit) => update({ unit }), "mm"));
      break;
    }
    case "qualitative": {
      const qualitative = vocabulary.qualitative.find((q) => q.concept === filter.concept) || { values: [] };
      const anyFinding = [{ value: "", label: "any finding" }];
      fields.push(choice(id("type"), "Of finding type", options(vocabulary.finding_types), filter.type, (type) => update({ type }), "SCT:27925004; empty: any finding", anyFinding));
      fields.push(
        choice(id("concept"), "Property", conceptOptions(vocabulary.qualitative), filter.concept, (concept) => {
          const chosen = vocabulary.qualitative.find((q) => q.concept === concept);
          update({ concept, value: chosen && chosen.values.length ? chosen.values[0] : "" });
        }, "SCT:444814009"),
      );
      fields.push(choice(id("value"), "Value", (qualitative.values || []).map((v) => optionOf(v)), filter.value, (value) => update({ value }), "SCT:263654008"));
      break;
    }
    case "clinical": {
      const variable = vocabulary.clinical.find((c) => c.concept === filter.concept) || {};
      fields.push(
        choice(id("concept"), "Variable", conceptOptions(vocabulary.clinical), filter.concept, (concept) => {
          const chosen = vocabulary.clinical.find((c) => c.concept === concept) || {};
          update({
            concept,
            unit: chosen.units && chosen.units.length ? chosen.units[0] : "",
            value: chosen.values && chosen.values.length ? chosen.values[0] : "",
          });
        }, "LN:10230-1"),
      );
      if (vocabulary.clinical.length === 0) {
        // Typed: a unit makes it a measured variable (a range), else a coded one (a value).
        fields.push(labelled(id("unit"), "Unit (type it for a measured variable, e.g. %)", textInput(filter.unit, (unit) => update({ unit: unit.trim() }))));
      }
      if (filter.unit || (variable.units && variable.units.length)) {
        fields.push(labelled(id("min"), "At least", numberInput(filter.min, (min) => update({ min }), { step: "any" })));
        fields.push(labelled(id("max"), "At most", numberInput(filter.max, (max) => update({ max }), { step: "any" })));
        if (vocabulary.clinical.length) {
          fields.push(labelled(id("unit"), "Unit", select((variable.units || [filter.unit]).map((u) => ({ value: u, label: u })), filter.unit, (unit) => update({ unit }))));
        }
      } else {
        fields.push(choice(id("value"), "Value", (variable.values || []).map((v) => optionOf(v)), filter.value, (value) => update({ value }), "SCT:77176002"));
      }
      break;
    }
    case "algorithm": {
      fields.push(choice(id("name"), "Algorithm", options(vocabulary.algorithms), filter.name, (name) => update({ name, version: "" })));
      // Its versions as the vocabulary lists them; "any version" unless one is chosen.
      const chosen = (vocabulary.algorithms || []).find((a) => a.value === filter.name);
      const versions = (chosen?.versions || []).map((v) => ({ value: v, label: v }));
      fields.push(choice(id("version"), "Version", versions, filter.version || "", (version) => update({ version }), "2.1.0", [{ value: "", label: "any version" }]));
      break;
    }
    default:
      break;
  }
  const enabled = element("input", {
    type: "checkbox",
    id: id("enabled"),
    checked: filter.enabled,
    onchange: (event) => update({ enabled: event.target.checked }),
  });
  const title = `${position + 1}. ${FILTER_KINDS[filter.kind].label}`;
  return element(
    "fieldset",
    { className: `filter${filter.enabled ? "" : " off"}`, "data-kind": filter.kind, "data-filter-id": filter.id },
    element("legend", { text: title }),
    element(
      "div",
      { className: "filter-bar" },
      element("span", { className: "check" }, enabled, element("label", { htmlFor: id("enabled"), text: `Use filter ${position + 1}: ${describe(filter)}` })),
      element("button", { type: "button", text: "Up", disabled: position === 0, "aria-label": `Move filter ${position + 1} up`, onclick: () => move(-1) }),
      element("button", { type: "button", text: "Down", disabled: position === total - 1, "aria-label": `Move filter ${position + 1} down`, onclick: () => move(1) }),
      element("button", { type: "button", text: "Remove", "aria-label": `Remove filter ${position + 1}`, onclick: remove }),
    ),
    element("div", { className: "fields" }, ...fields),
  );
}
