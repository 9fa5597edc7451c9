// The builder's filters and the cohort language (openapi/federated.yaml, Cohort) they make.
// A filter is {id, kind, enabled, ...parameters}; the cohort of a list of filters is the
// conjunction of its enabled, complete filters. Nothing else is ever saved or sent.

import { SEXES, labelOf } from "./vocabulary.js";

/** The kinds of filter, in the order the "add a filter" list shows them. `attribute` kinds
 * map to one cohort attribute each, so each may be added once. */
export const FILTER_KINDS = {
  modalities: { label: "Has a study of modality (per patient)" },
  sex: { label: "Sex", attribute: "PatientSex" },
  age: { label: "Age at the study (years)", attribute: "PatientAge" },
  years: { label: "Study year", attribute: "StudyDate" },
  body_part: { label: "Body part", attribute: "BodyPartExamined" },
  manufacturer: { label: "Manufacturer", attribute: "Manufacturer" },
  finding: { label: "Finding present or absent" },
  measurement: { label: "Measurement of a finding" },
  qualitative: { label: "Qualitative value of a finding" },
  clinical: { label: "Clinical variable (per patient)" },
  algorithm: { label: "Analysed by algorithm" },
};

let counter = 0;
export function newId() {
  counter += 1;
  return `f${Date.now().toString(36)}${counter}`;
}

/** A new filter of `kind` with defaults from the vocabulary. */
export function newFilter(kind, vocabulary) {
  const first = (list, key = "value") => (list && list.length ? list[0][key] ?? list[0] : "");
  const base = { id: newId(), kind, enabled: true };
  switch (kind) {
    case "modalities":
      return { ...base, values: vocabulary.modalities.length ? [first(vocabulary.modalities)] : [] };
    case "sex":
      return { ...base, value: "F" };
    case "age":
      return { ...base, min: "", max: "" };
    case "years":
      return { ...base, from: "", to: "" };
    case "body_part":
      return { ...base, value: first(vocabulary.body_parts) };
    case "manufacturer":
      return { ...base, value: first(vocabulary.manufacturers) };
    case "finding":
      return { ...base, type: first(vocabulary.finding_types), presence: "present" };
    case "measurement": {
      const measurement = vocabulary.measurements[0] || { concept: "", units: [""] };
      return {
        ...base,
        type: first(vocabulary.finding_types),
        concept: measurement.concept,
        unit: (measurement.units || [""])[0],
        min: "",
        max: "",
      };
    }
    case "qualitative": {
      const qualitative = vocabulary.qualitative[0] || { concept: "", values: [""] };
      return {
        ...base,
        type: "",
        concept: qualitative.concept,
        value: (qualitative.values || [""])[0],
      };
    }
    case "clinical": {
      const clinical = vocabulary.clinical[0] || { concept: "", units: [""] };
      return {
        ...base,
        concept: clinical.concept,
        unit: (clinical.units || [""])[0] || "",
        value: (clinical.values || [""])[0] || "",
        min: "",
        max: "",
      };
    }
    case "algorithm":
      return { ...base, name: first(vocabulary.algorithms), version: "" };
    default:
      throw new Error(`unknown filter kind ${kind}`);
  }
}

const number = (text) => (text === "" || text == null ? null : Number(text));
const given = (text) => text !== "" && text != null && Number.isFinite(Number(text));

/** Whether the filter says enough to be asked (an empty range is no filter yet). */
export function isComplete(filter) {
  switch (filter.kind) {
    case "modalities":
      return filter.values.length > 0;
    case "age":
      return given(filter.min) || given(filter.max);
    case "years":
      return /^\d{4}$/.test(filter.from || "") || /^\d{4}$/.test(filter.to || "");
    case "measurement":
      return Boolean(filter.concept && filter.unit) && (given(filter.min) || given(filter.max));
    case "clinical":
      return Boolean(filter.concept) &&
        (filter.unit ? given(filter.min) || given(filter.max) : Boolean(filter.value));
    case "qualitative":
      return Boolean(filter.concept && filter.value);
    case "finding":
      return Boolean(filter.type) || filter.presence !== "present";
    case "algorithm":
      return Boolean(filter.name);
    default:
      return Boolean(filter.value);
  }
}

function measurementOf(filter) {
  const measurement = { concept: filter.concept, unit: filter.unit };
  if (given(filter.min)) measurement.min = number(filter.min);
  if (given(filter.max)) measurement.max = number(filter.max);
  return measurement;
}

/** The cohort (the cohort language's JSON) of the enabled, complete filters, in order. */
export function cohortOf(filters) {
  const cohort = {};
  const attributes = {};
  const findings = [];
  const modalities = [];
  const patientFindings = [];
  for (const filter of filters) {
    if (!filter.enabled || !isComplete(filter)) continue;
    switch (filter.kind) {
      case "modalities":
        for (const value of filter.values) if (!modalities.includes(value)) modalities.push(value);
        break;
      case "age":
        attributes.PatientAge = `${given(filter.min) ? Number(filter.min) : ""}-${given(filter.max) ? Number(filter.max) : ""}`;
        break;
      case "years":
        // Whole years only: the dashboard never sends an exact date.
        attributes.StudyDate = `${filter.from || ""}-${filter.to || ""}`;
        break;
      case "finding": {
        const finding = { presence: filter.presence };
        if (filter.type) finding.type = filter.type;
        findings.push(finding);
        break;
      }
      case "measurement": {
        const finding = { measurements: [measurementOf(filter)] };
        if (filter.type) finding.type = filter.type;
        findings.push(finding);
        break;
      }
      case "qualitative": {
        const finding = { qualitative: [{ concept: filter.concept, value: filter.value }] };
        if (filter.type) finding.type = filter.type;
        findings.push(finding);
        break;
      }
      case "clinical":
        // A clinical report is one finding without a type (docs/federated.md), in any of
        // the patient's studies.
        patientFindings.push(
          filter.unit
            ? { measurements: [measurementOf(filter)] }
            : { qualitative: [{ concept: filter.concept, value: filter.value }] },
        );
        break;
      case "algorithm":
        findings.push({
          algorithm: filter.name,
          ...(filter.version ? { algorithm_version: filter.version } : {}),
          presence: "any",
        });
        break;
      default:
        attributes[FILTER_KINDS[filter.kind].attribute] = filter.value;
    }
  }
  if (Object.keys(attributes).length) cohort.attributes = attributes;
  if (findings.length) cohort.findings = findings;
  if (modalities.length || patientFindings.length) {
    cohort.patient_has = {};
    if (modalities.length) cohort.patient_has.modalities = modalities;
    if (patientFindings.length) cohort.patient_has.findings = patientFindings;
  }
  return cohort;
}

/** The attrition steps: all patients, then the cohort after each enabled, complete filter. */
export function attritionSteps(filters) {
  const steps = [{ filter: null, cohort: {} }];
  const active = [];
  for (const filter of filters) {
    if (!filter.enabled || !isComplete(filter)) continue;
    active.push(filter);
    steps.push({ filter, cohort: cohortOf(active) });
  }
  return steps;
}

/** JSON with sorted keys: one string per question, whatever order it was built in. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

const range = (low, high, unit = "") => {
  const u = unit ? ` ${unit}` : "";
  if (given(low) && given(high)) return `${low}–${high}${u}`;
  if (given(low)) return `≥ ${low}${u}`;
  if (given(high)) return `≤ ${high}${u}`;
  return "(no range yet)";
};

/** The filter in words, for the attrition table. */
export function describe(filter) {
  switch (filter.kind) {
    case "modalities":
      return `has a ${filter.values.join(" and a ")} study`;
    case "sex":
      return `sex: ${(SEXES.find((s) => s.value === filter.value) || { label: filter.value }).label}`;
    case "age":
      return `age ${range(filter.min, filter.max, "years")}`;
    case "years":
      return `study year ${filter.from || "…"}–${filter.to || "…"}`;
    case "body_part":
      return `body part ${filter.value}`;
    case "manufacturer":
      return `manufacturer ${filter.value}`;
    case "finding":
      return `${filter.type ? labelOf(filter.type) : "any finding"} ${filter.presence === "any" ? "reported" : filter.presence}`;
    case "measurement":
      return `${filter.type ? labelOf(filter.type) : "a finding"} with ${labelOf(filter.concept)} ${range(filter.min, filter.max, filter.unit)}`;
    case "qualitative":
      return `${filter.type ? labelOf(filter.type) : "a finding"} with ${labelOf(filter.concept)} = ${labelOf(filter.value)}`;
    case "clinical":
      return filter.unit
        ? `${labelOf(filter.concept)} ${range(filter.min, filter.max, filter.unit)}`
        : `${labelOf(filter.concept)} = ${labelOf(filter.value)}`;
    case "algorithm":
      return `analysed by ${filter.name}${filter.version ? ` ${filter.version}` : ""}`;
    default:
      return filter.kind;
  }
}

const textOf = (value) => (Array.isArray(value) ? value.join(",") : String(value));

/** The filters a cohort (the cohort language's JSON) is made of, in the builder's order; an
 * Error naming the part the builder cannot show. */
export function filtersFromCohort(cohort) {
  if (!cohort || typeof cohort !== "object" || Array.isArray(cohort)) {
    throw new Error("a cohort is a JSON object");
  }
  const known = new Set(["attributes", "findings", "patient_has"]);
  for (const key of Object.keys(cohort)) {
    if (!known.has(key)) throw new Error(`${key}: not part of a cohort`);
  }
  const filters = [];
  const add = (filter) => filters.push({ id: newId(), enabled: true, ...filter });
  const has = cohort.patient_has || {};
  if (has.modalities && has.modalities.length) add({ kind: "modalities", values: [...has.modalities] });
  const attributes = cohort.attributes || {};
  for (const [keyword, value] of Object.entries(attributes)) {
    const text = textOf(value);
    if (keyword === "PatientAge") {
      const [min, max] = text.includes("-") ? text.split("-") : [text, text];
      add({ kind: "age", min: min.replace(/Y$/i, ""), max: max.replace(/Y$/i, "") });
    } else if (keyword === "StudyDate") {
      const [from, to] = text.includes("-") ? text.split("-") : [text, text];
      add({ kind: "years", from: from.slice(0, 4), to: to.slice(0, 4) });
    } else {
      const kind = Object.keys(FILTER_KINDS).find((k) => FILTER_KINDS[k].attribute === keyword);
      if (!kind) throw new Error(`attributes.${keyword}: the builder has no such filter`);
      add({ kind, value: text });
    }
  }
  for (const finding of cohort.findings || []) {
    const type = finding.type || "";
    const measurement = (finding.measurements || [])[0];
    const qualitative = (finding.qualitative || [])[0];
    if ((finding.measurements || []).length + (finding.qualitative || []).length > 1) {
      throw new Error("findings: a finding with several measurements or values has no filter here");
    }
    if (measurement) {
      add({
        kind: "measurement",
        type,
        concept: measurement.concept,
        unit: measurement.unit,
        min: measurement.min ?? "",
        max: measurement.max ?? "",
      });
    } else if (qualitative) {
      add({ kind: "qualitative", type, concept: qualitative.concept, value: qualitative.value });
    } else if (finding.algorithm) {
      add({ kind: "algorithm", name: finding.algorithm, version: finding.algorithm_version || "" });
    } else {
      add({ kind: "finding", type, presence: finding.presence || "present" });
    }
  }
  for (const finding of has.findings || []) {
    const measurement = (finding.measurements || [])[0];
    const qualitative = (finding.qualitative || [])[0];
    if (measurement) {
      add({
        kind: "clinical",
        concept: measurement.concept,
        unit: measurement.unit,
        value: "",
        min: measurement.min ?? "",
        max: measurement.max ?? "",
      });
    } else if (qualitative) {
      add({ kind: "clinical", concept: qualitative.concept, unit: "", value: qualitative.value, min: "", max: "" });
    } else {
      throw new Error("patient_has.findings: only clinical variables have a filter here");
    }
  }
  return filters;
}
