// The jobs page's "Approvals" section (admin role, GET/POST /approvals; docs/dashboard.md):
// the analyses a hub sent and the training plans a federated-learning run asked for, waiting
// for this site's admin, with Approve / Refuse (and Revoke for an approved plan); the decided
// ones below with who and when. These objects hold no UID and no patient data (a model, a
// cohort definition, a plan's YAML, counts): keep it so.

import { call } from "./api.js";
import { describe, filtersFromCohort } from "./cohort.js";
import { element } from "./filters.js";

const $ = (id) => document.getElementById(id);

export const approvalsApi = {
  list: () => call("GET", "/approvals"),
  decideAnalysis: (id, decision, note) => call("POST", `/approvals/analyses/${encodeURIComponent(id)}`, { decision, note }),
  decidePlan: (sha256, decision, note) => call("POST", `/approvals/training-plans/${encodeURIComponent(sha256)}`, { decision, note }),
};

/** "ModalitiesInStudy" -> "modalities in study". */
const words = (keyword) => keyword.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
const textOf = (value) => (Array.isArray(value) ? value.join(", ") : String(value));

/** A cohort (the cohort language) in words: as the builder's attrition table says its filters,
 * and attribute by attribute where the builder has no filter for one. */
export function cohortText(cohort) {
  try {
    const filters = filtersFromCohort(cohort);
    return filters.length ? filters.map(describe).join("; ") : "every study";
  } catch {
    const { attributes = {}, ...rest } = cohort || {};
    const parts = Object.entries(attributes).map(([keyword, value]) => {
      try {
        return describe(filtersFromCohort({ attributes: { [keyword]: value } })[0]);
      } catch {
        return `${words(keyword)} ${textOf(value)}`;
      }
    });
    try {
      parts.push(...filtersFromCohort(rest).map(describe));
    } catch {
      parts.push(JSON.stringify(rest));
    }
    return parts.join("; ") || "every study";
  }
}

/** An ISO 8601 time or epoch seconds, to the minute, in UTC. */
export function whenText(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

const sha = (value) => element("code", { className: "sha", text: value });

let say = () => {};
let refreshPage = async () => {};

/** A button that asks for a note (why, for the record), sends the decision, then refreshes. */
function decisionButton(label, what, verb, send) {
  return element("button", {
    type: "button",
    text: label,
    "aria-label": `${label} ${what}`,
    "data-decision": verb,
    onclick: async () => {
      const note = window.prompt(`${label} ${what}: a note for the record (why)`, "");
      if (note === null) return; // cancelled: nothing decided
      try {
        await send(verb, note);
      } catch (error) {
        say(`${label} ${what} failed: ${error.message}`);
        return;
      }
      try {
        await refreshPage();
        say(`${what}: ${verb}.`);
      } catch (error) {
        say(`${what}: ${verb}. The page could not be refreshed: ${error.message}`);
      }
      $("approvals-title").focus(); // the pressed button is gone: keep the keyboard user's place
    },
  });
}

// The cohort too: two analyses of one model from one hub differ by their cohorts, and each
// button's name must say which one it acts on.
const analysisName = (a) => `analysis ${a.model.name} ${a.model.version} from ${a.hub} over ${cohortText(a.cohort)}`;
const planName = (p) => `plan ${p.name || p.sha256.slice(0, 12)}`;

function analysisButtons(analysis) {
  const send = (verb, note) => approvalsApi.decideAnalysis(analysis.analysis_id, verb, note);
  const what = analysisName(analysis);
  return [decisionButton("Approve", what, "approved", send), decisionButton("Refuse", what, "refused", send)];
}

function planButtons(plan) {
  const send = (verb, note) => approvalsApi.decidePlan(plan.sha256, verb, note);
  const what = planName(plan);
  if (plan.state === "approved") return [decisionButton("Revoke", what, "revoked", send)];
  if (plan.state !== "asked") return [decisionButton("Approve", what, "approved", send)]; // refused or revoked: may be reconsidered
  return [decisionButton("Approve", what, "approved", send), decisionButton("Refuse", what, "refused", send)];
}

/** The plan's YAML behind a disclosure: the admin reads what they approve. */
function planText(plan) {
  if (!plan.plan) return element("span", { className: "note", text: "not asked for here (decided by command)" });
  return element("details", {}, element("summary", { text: `Show ${planName(plan)}` }), element("pre", { className: "plan", text: plan.plan }));
}

/** A table: its caption, column titles, and rows of [attributes of the row, the row's name,
 * ...cells], a cell being a text or the nodes it holds. */
function table(id, caption, titles, rows) {
  const cell = (content) => (typeof content === "string" ? element("td", { text: content }) : element("td", {}, ...[].concat(content)));
  return element(
    "table",
    { id },
    element("caption", { text: caption }),
    element("thead", {}, element("tr", {}, ...titles.map((t) => element("th", { scope: "col", text: t })))),
    element("tbody", {}, ...rows.map(([attributes, name, ...cells]) => element("tr", attributes, element("th", { scope: "row", text: name }), ...cells.map(cell)))),
  );
}

function pendingAnalyses(analyses) {
  if (!analyses.length) return element("p", { className: "note", id: "no-pending-analyses", text: "No analysis waits for a decision." });
  return table(
    "pending-analyses",
    `Analyses waiting for a decision (${analyses.length})`,
    ["Model", "Hub", "Bundle sha256", "Cohort", "Received", "Decision"],
    analyses.map((a) => [
      { "data-analysis": a.analysis_id },
      `${a.model.name} ${a.model.version}`,
      a.hub,
      sha(a.model.bundle_sha256),
      cohortText(a.cohort),
      whenText(a.received_at),
      analysisButtons(a),
    ]),
  );
}

function askedText(p) {
  const last = whenText(p.last_asked_at);
  return p.times_asked > 1 ? `${last} (${p.times_asked} times since ${whenText(p.first_asked_at)})` : last;
}

function askedPlans(plans) {
  if (!plans.length) return element("p", { className: "note", id: "no-asked-plans", text: "No training plan waits for a decision." });
  return table(
    "asked-plans",
    `Training plans asked for (${plans.length})`,
    ["Plan", "sha256", "Features", "Asked by", "Asked", "Plan text", "Decision"],
    plans.map((p) => [
      { "data-plan": p.sha256 },
      p.name || "(unreadable plan)",
      sha(p.sha256),
      (p.features || []).join(", "),
      p.asked_by || "—",
      askedText(p),
      planText(p),
      planButtons(p),
    ]),
  );
}

function decidedRows(analyses, plans) {
  const rows = [
    ...analyses.map((a) => {
      const last = a.decisions[a.decisions.length - 1] || {};
      return { key: `a:${a.analysis_id}`, kind: "analysis", what: `${a.model.name} ${a.model.version} from ${a.hub} over ${cohortText(a.cohort)}`, state: !last.decision || last.decision === a.state ? a.state : `${last.decision}; now ${a.state}`, by: last.by, at: last.at, note: last.note, buttons: [] };
    }),
    ...plans.map((p) => ({ key: `p:${p.sha256}`, kind: "training plan", what: `${p.name || "(no text)"} (${p.sha256.slice(0, 12)}…)`, state: p.state, by: p.decided_by, at: p.decided_at, note: p.note, buttons: planButtons(p) })),
  ];
  rows.sort((x, y) => String(y.at || "").localeCompare(String(x.at || "")));
  return rows;
}

function decided(analyses, plans) {
  const rows = decidedRows(analyses, plans);
  if (!rows.length) return element("p", { className: "note", text: "Nothing decided yet." });
  return table(
    "decided",
    `Decided, newest first (${rows.length})`,
    ["What", "Kind", "Decision", "Decided by", "When", "Note", "Actions"],
    rows.map((r) => [{ "data-key": r.key }, r.what, r.kind, r.state, r.by || "—", whenText(r.at), r.note || "—", r.buttons]),
  );
}

/** Read /approvals and show it. */
export async function showApprovals() {
  const { analyses, training_plans: plans } = await approvalsApi.list();
  $("approvals-pending").replaceChildren(
    pendingAnalyses(analyses.filter((a) => a.state === "pending")),
    askedPlans(plans.filter((p) => p.state === "asked")),
  );
  // Decided analyses: those an admin (or a trusted hub) decided on.
  const decidedAnalyses = analyses.filter((a) => a.state !== "pending" && a.decisions.length);
  $("approvals-decided").replaceChildren(decided(decidedAnalyses, plans.filter((p) => p.state !== "asked")));
}

/** No approval data left in the page (signed out, or a token without the admin role). */
export function clearApprovals() {
  $("approvals-pending").replaceChildren();
  $("approvals-decided").replaceChildren();
}

/** `status` shows what happened; `refresh` refreshes the whole page after a decision. */
export function setUpApprovals(status, refresh) {
  say = status;
  refreshPage = refresh;
}
