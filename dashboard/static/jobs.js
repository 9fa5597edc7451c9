// The jobs page (admin role): jobs by state, queue depth, a job's reason and attempts, retry
// and delete. Study and series UIDs are never shown: a job is named by its id and model, and
// UID-shaped text in error messages is masked.

import { clearToken, dashboardConfig, jobsApi, onUnauthorized } from "./api.js";
import { element } from "./filters.js";
import { showLogin, signIn } from "./login.js";

const STATES = ["pending", "running", "failed", "dead", "succeeded"];
const $ = (id) => document.getElementById(id);
let root = "/jobs";
let authNeeded = false;

/** Text with anything UID-, date- or identifier-shaped replaced (the page shows no identifier). */
export function masked(text) {
  return String(text ?? "")
    .replace(/\d+(\.\d+){2,}/g, "[uid]")
    .replace(/(?<!\d)(19|20)\d{6}(?!\d)/g, "[date]");
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().slice(11, 19) + " UTC" : "");

function say(text) {
  $("status").textContent = text;
}

async function depth() {
  const totals = await Promise.all(STATES.map((state) => jobsApi.list(root, { state, limit: 1 }).then((r) => r.total)));
  $("depth").replaceChildren(
    element("caption", { text: "Jobs by state (queue depth: pending and running)" }),
    element("thead", {}, element("tr", {}, ...STATES.map((s) => element("th", { scope: "col", text: s })))),
    element("tbody", {}, element("tr", {}, ...totals.map((t, i) => element("td", { className: "number", "data-state": STATES[i], text: String(t) })))),
  );
}

async function list() {
  const state = $("state").value;
  const params = { limit: 100 };
  if (state) params.state = state;
  const { jobs, total } = await jobsApi.list(root, params);
  const rows = jobs.map((job) =>
    element(
      "tr",
      { "data-job": String(job.id) },
      element("th", { scope: "row", text: `#${job.id}` }),
      element("td", { text: job.model }),
      element("td", { text: job.state }),
      element("td", { className: "number", text: `${job.attempts} of ${job.max_attempts}` }),
      element("td", { text: masked(job.last_error) }),
      element("td", {}, element("button", { type: "button", text: "Details", "aria-label": `Details of job ${job.id}`, onclick: () => detail(job.id) })),
    ),
  );
  $("jobs").replaceChildren(
    element("caption", { text: `${total} job(s)${state ? ` in state ${state}` : ""}${total > jobs.length ? `, the first ${jobs.length} shown` : ""}` }),
    element("thead", {}, element("tr", {}, ...["Job", "Model", "State", "Attempts", "Last error", ""].map((t) => element("th", { scope: "col", text: t })))),
    element("tbody", {}, ...rows),
  );
}

async function detail(id) {
  const job = await jobsApi.get(root, id);
  const attempts = (job.history || []).map((entry) => element("li", { text: masked(typeof entry === "string" ? entry : JSON.stringify(entry)) }));
  const act = (label, action, done) =>
    element("button", {
      type: "button",
      text: label,
      onclick: async () => {
        try {
          await action(root, id);
          say(done);
          await refresh();
          if (label !== "Delete") await detail(id);
          else $("detail").replaceChildren(element("p", { className: "note", text: done }));
        } catch (error) {
          say(`${label} failed: ${error.message}`);
        }
      },
    });
  $("detail").replaceChildren(
    element("h3", { text: `Job #${job.id}: ${job.model} (${job.state})` }),
    element(
      "dl",
      {},
      element("dt", { text: "Attempts" }),
      element("dd", { text: `${job.attempts} of ${job.max_attempts}` }),
      element("dt", { text: "Reason" }),
      element("dd", { id: "job-reason", text: masked(job.last_error) || "none" }),
      element("dt", { text: "Kind of error" }),
      element("dd", { text: job.error_kind || "none" }),
      element("dt", { text: "Started / finished" }),
      element("dd", { text: `${when(job.started_at) || "—"} / ${when(job.finished_at) || "—"}` }),
    ),
    element("h4", { text: "History" }),
    element("ol", {}, ...attempts),
    act("Retry", jobsApi.retry, `Job #${id} queued again.`),
    act("Delete", jobsApi.remove, `Job #${id} deleted.`),
  );
}

async function refresh() {
  await Promise.all([depth(), list()]);
}

async function open() {
  $("login").hidden = true;
  $("app").hidden = false;
  if (authNeeded) {
    $("who").replaceChildren(element("button", { type: "button", text: "Sign out", onclick: () => { clearToken(); location.reload(); } }));
  }
  try {
    await refresh();
  } catch (error) {
    if (error.status === 403) say("The jobs page needs the admin role.");
    else if (error.status !== 401) say(`The jobs could not be read: ${error.message}`);
  }
}

async function start() {
  const config = await dashboardConfig();
  root = config.jobs || "/jobs";
  onUnauthorized((reason) => showLogin(`Not signed in: ${reason}`));
  $("refresh").onclick = () => refresh().catch((error) => say(error.message));
  $("state").onchange = () => list().catch((error) => say(error.message));
  authNeeded = config.auth;
  if (await signIn(config, open)) await open();
}

start().catch((error) => say(`The jobs page could not start: ${error.message}`));
