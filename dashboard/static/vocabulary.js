// The builder's options: the server's vocabulary (GET /vocabulary, released through the privacy
// layer) mapped into the lists the filters offer, in this one place. Codes are SCHEME:CODE as the
// cohort language writes them.
//
// Options come from what the sites hold; when the vocabulary is not loaded (a server without
// it, a budget that cannot pay for it) the builder offers free-text inputs instead of fixed
// lists, which would name values no site holds. Two lists say nothing about the data and stay
// fixed: sex (DICOM PS3.3 C.7.1.1: F, M, O) and, without a vocabulary or when it lists no
// modality, the modalities the server itself lists in every modality table
// (gateway/federated/noisy.py MODALITY_VOCABULARY).
//
// The vocabulary's counts order the options, most common first. They are NOT cohort sizes
// (each patient counts for a bounded number of values, docs/federated.md "Vocabulary"), so
// they are never shown.

export const MEANINGS = {
  "SCT:27925004": "Nodule",
  "SCT:4147007": "Mass",
  "SCT:81827009": "Diameter",
  "SCT:118565006": "Volume",
  "SCT:39607008": "Lung",
  "SCT:444814009": "Malignancy",
  "SCT:263654008": "Suspicious",
  "SCT:2667000": "Absent",
  "LN:10230-1": "Left ventricular ejection fraction",
  "LN:72166-2": "Tobacco smoking status",
  "SCT:229819007": "Tobacco use",
  "SCT:77176002": "Smoker",
  "SCT:8392000": "Non-smoker",
  "SCT:8517006": "Ex-smoker",
  "DCM:112031": "Attenuation coefficient",
};

export const SEXES = [
  { value: "F", label: "Female" },
  { value: "M", label: "Male" },
  { value: "O", label: "Other" },
];

/** The server's fixed modality list (every noisy modality table lists all of them). */
const FIXED_MODALITIES = ["CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT", "ECG", "SR", "SEG"];

/** What the builder offers without a vocabulary: the fixed modalities, free text elsewhere. */
export const NO_VOCABULARY = Object.freeze({
  source: "none",
  modalities: FIXED_MODALITIES.map((value) => ({ value })),
  body_parts: [],
  manufacturers: [],
  finding_types: [],
  finding_sites: [],
  algorithms: [],
  measurements: [],
  qualitative: [],
  clinical: [],
});

/** How common an entry is, for ordering only: its count, or at a hub with a part below a
 * site's threshold its lower bound. */
function weight(entry) {
  if (entry.count != null) return entry.count;
  if (entry.lower != null) return entry.lower;
  return 0;
}

const byWeight = (a, b) => b.weight - a.weight;

/** One list of {value} entries, most common first. */
function values(entries, key = "value") {
  return (entries || [])
    .map((entry) => ({ value: entry[key], sites: entry.sites, weight: weight(entry) }))
    .sort(byWeight);
}

/** Entries {concept, <member>} grouped by concept: [{concept, <plural>: [...]}], the concepts
 * and, within each, the members most common first. */
function grouped(entries, member, plural) {
  const concepts = new Map();
  for (const entry of entries || []) {
    const group = concepts.get(entry.concept) || { concept: entry.concept, weight: 0, parts: [] };
    group.weight += weight(entry);
    group.parts.push({ value: entry[member], weight: weight(entry) });
    concepts.set(entry.concept, group);
  }
  return [...concepts.values()]
    .sort(byWeight)
    .map((group) => ({ concept: group.concept, weight: group.weight, [plural]: group.parts.sort(byWeight).map((p) => p.value) }));
}

/** Algorithms by name (the cohort language filters by name), their versions listed. */
function algorithms(entries) {
  const names = new Map();
  for (const entry of entries || []) {
    const algorithm = names.get(entry.name) || { value: entry.name, versions: [], weight: 0 };
    algorithm.weight += weight(entry);
    if (entry.version && !algorithm.versions.includes(entry.version)) algorithm.versions.push(entry.version);
    names.set(entry.name, algorithm);
  }
  return [...names.values()].sort(byWeight);
}

/** The builder's options from a `vocabulary` answer (a site's, or a hub's union). */
export function builderVocabulary(answer) {
  const lists = answer.vocabulary || {};
  // A clinical variable is measured (units) or coded (values); one concept, one option.
  const clinical = new Map();
  for (const variable of [
    ...grouped(lists.clinical_measurement, "unit", "units"),
    ...grouped(lists.clinical_qualitative, "value", "values"),
  ]) {
    const known = clinical.get(variable.concept);
    clinical.set(variable.concept, known ? { ...known, ...variable, weight: known.weight + variable.weight } : variable);
  }
  return {
    source: "server",
    // A site too small for the noisy threshold lists no modality: the fixed list then.
    modalities: lists.modality && lists.modality.length ? values(lists.modality) : NO_VOCABULARY.modalities,
    body_parts: values(lists.body_part),
    manufacturers: values(lists.manufacturer),
    finding_types: values(lists.finding_type),
    finding_sites: values(lists.finding_site),
    algorithms: algorithms(lists.algorithm),
    measurements: grouped(lists.measurement, "unit", "units"),
    qualitative: grouped(lists.qualitative, "value", "values"),
    clinical: [...clinical.values()].sort(byWeight),
  };
}

export function meaningOf(code, entry) {
  if (entry && entry.meaning) return entry.meaning;
  return MEANINGS[code] || code;
}

/** "Nodule (SCT:27925004)", or the value alone when it is not a code. */
export function labelOf(code, entry) {
  const meaning = meaningOf(code, entry);
  return meaning === code ? code : `${meaning} (${code})`;
}

/** One option of a list: a string or {value}. No count in the label: a vocabulary count is
 * not a cohort size. */
export function optionOf(item) {
  const entry = typeof item === "string" ? { value: item } : item;
  let label = labelOf(entry.value, entry);
  // At a hub: the sites that listed it (a value some sites do not hold, or too few patients).
  if (Array.isArray(entry.sites)) label += ` — at ${entry.sites.join(", ")}`;
  return { value: entry.value, label, entry };
}
