// The options the builder offers when the server has no vocabulary endpoint, and the names of
// the codes it knows. Codes are SCHEME:CODE as the cohort language writes them.

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

/** The shape of GET /federated/v1/vocabulary, with what the bundled models and converters
 * write. No counts: a fixed list says what may exist, not what a site holds. */
export const FIXED_VOCABULARY = {
  modalities: ["CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "ECG", "SR", "SEG", "OT"]
    .map((value) => ({ value })),
  body_parts: ["CHEST", "ABDOMEN", "HEAD", "HEART", "PELVIS", "BREAST", "EXTREMITY"].map((value) => ({ value })),
  manufacturers: [],
  finding_types: [{ value: "SCT:27925004" }, { value: "SCT:4147007" }],
  finding_sites: [{ value: "SCT:39607008" }],
  algorithms: [{ value: "nodule-detector", versions: [] }, { value: "nodule-presence", versions: [] }],
  measurements: [
    { concept: "SCT:81827009", units: ["mm", "cm"] },
    { concept: "SCT:118565006", units: ["mm3", "mL"] },
  ],
  qualitative: [{ concept: "SCT:444814009", values: ["SCT:263654008"] }],
  clinical: [
    { concept: "LN:10230-1", units: ["%"] },
    { concept: "SCT:229819007", values: ["SCT:77176002", "SCT:8392000", "SCT:8517006"] },
  ],
};

export function meaningOf(code, entry) {
  if (entry && entry.meaning) return entry.meaning;
  return MEANINGS[code] || code;
}

/** "Nodule (SCT:27925004)", or the value alone when it is not a code. */
export function labelOf(code, entry) {
  const meaning = meaningOf(code, entry);
  return meaning === code ? code : `${meaning} (${code})`;
}

/** One option of a list: a string or {value, count?, interval?}; the label says the count. */
export function optionOf(item) {
  const entry = typeof item === "string" ? { value: item } : item;
  let label = labelOf(entry.value, entry);
  if (entry.count != null) label += ` — about ${entry.count}`;
  return { value: entry.value, label, entry };
}
