// Writes a TID 1500 SR with dcmjs (as OHIF 2.x/Cornerstone did) from one Length measurement.
// Usage: node dcmjs_length_sr.js '<json spec>' out.dcm
// spec: {studyInstanceUID, seriesInstanceUID, sopClassUID, sopInstanceUID,
//        start: [x, y], end: [x, y], length: mm, finding?: {CodeValue, CodingSchemeDesignator,
//        CodeMeaning}}
"use strict";
const fs = require("fs");
const dcmjs = require("dcmjs");

const spec = JSON.parse(process.argv[2]);
const imageId = "wadouri:source";
const metadata = {
  generalSeriesModule: {
    studyInstanceUID: spec.studyInstanceUID,
    seriesInstanceUID: spec.seriesInstanceUID,
  },
  sopCommonModule: { sopClassUID: spec.sopClassUID, sopInstanceUID: spec.sopInstanceUID },
  frameNumber: 1,
};
const metadataProvider = { get: (type) => metadata[type] };
const measurement = {
  handles: {
    start: { x: spec.start[0], y: spec.start[1] },
    end: { x: spec.end[0], y: spec.end[1] },
  },
  length: spec.length,
};
if (spec.finding) measurement.finding = spec.finding;
const toolState = { [imageId]: { Length: { data: [measurement] } } };
const report = dcmjs.adapters.Cornerstone.MeasurementReport.generateReport(
  toolState,
  metadataProvider,
);
const dataset = report.dataset;
dataset.PatientID = spec.patientID || "";
const dict = dcmjs.data.datasetToDict(dataset);
fs.writeFileSync(process.argv[3], Buffer.from(dict.write()));
