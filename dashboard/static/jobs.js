// The jobs page (admin role): the approvals waiting for this site's admin (approvals.js), jobs
// by state, queue depth, a job's reason and attempts, retry and delete. Study and series UIDs
// are never shown: a job is named by its id and model, and UID-shaped text in error messages is
// masked.

import { clearToken, dashboardConfig, jobsApi, onUnauthorized } from "./api.js";
import { clearApprovals, setUpApprovals, showApprovals } from "./approvals.js";
import { element } from "./filters.js";
import { showLogin as showLoginForm, signIn } from "./login.js";

const STATES = ["pending", "running", "failed", "dead", "succeeded"];
const $ = (id) => document.getElementById(id);
let root = "/jobs";
let shownJob = null; // the id of the job whose details are open
let authNeeded = false;

/** Text with anything UID-, date- or identifier-shaped replaced (the page shows no identifier). */
export function masked(text) {
  return String(text ?? "")
    // Not right after "://": an inference service's numeric address in an error is kept (the
    // admin needs to know which service failed); a UID is never a URL's host.
    .replace(/(?<!:\/\/)(?<![\d.])\d+(\.\d+){2,}/g, "[uid]")
    .replace(/(?<!\d)(19|20)\d{6}(?!\d)/g, "[date]");
}

const when = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().slice(11, 19) + " UTC" : "");

function say(text) {
  $("status").textContent = text;
}

/** The sign-in form, with no job data left in the page of someone who is not (or no longer)
 * allowed to see it. */
function showLogin(reason) {
  for (const id of ["depth", "jobs"]) $(id).replaceChildren();
  clearApprovals();
  $("queue-depth").textContent = "";
  $("detail").replaceChildren(element("p", { className: "note", text: "Choose a job above." }));
  showLoginForm(reason);
}

async function depth() {
  const totals = await Promise.all(STATES.map((state) => jobsApi.list(root, { state, limit: 1 }).then((r) => r.total)));
  // The queue depth: what is still to do, waiting (pending, also while backing off) or running.
  $("queue-depth").textContent = `Queue depth: ${totals[0] + totals[1]}`;
  $("depth").replaceChildren(
    element("caption", { text: "Jobs by state (queue depth: pending and running)" }),
    element("thead", {}, element("tr", {}, ...STATES.map((s) => element("th", { scope: "col", text: s })))),
    element("tbody", {}, element("tr", {}, ...totals.map((t, i) => element("td", { className: "number", "data-state": STATES[i], text: String(t) })))),
  );
}

const PAGE = 100;

async function list() {
  const state = $("state").value;
  const params = { limit: PAGE };
  if (state) params.state = state;
  let { jobs, total } = await jobsApi.list(root, params);
  // The API lists the oldest first; an admin wants the newest: ask for the last page.
  if (total > PAGE) ({ jobs, total } = await jobsApi.list(root, { ...params, offset: total - PAGE }));
  jobs = [...jobs].reverse();
  const rows = jobs.map((job) =>
    element(
      "tr",
      { "data-job": String(job.id) },
      element("th", { scope: "row", text: `#${job.id}` }),
      element("td", { text: job.model }),
      element("td", { text: job.state }),
      element("td", { className: "number", text: `${job.attempts} of ${job.max_attempts}` }),
      element("td", { text: masked(job.last_error) }),
      element("td", {}, element("button", { type: "button", text: "Details", "aria-label": `Details of job ${job.id}`, onclick: () => showJob(job.id) })),
    ),
  );
  $("jobs").replaceChildren(
    element("caption", { text: `${total} job(s)${state ? ` in state ${state}` : ""}, newest first${total > jobs.length ? `; the newest ${jobs.length} shown` : ""}` }),
    element("thead", {}, element("tr", {}, ...["Job", "Model", "State", "Attempts", "Last error", "Actions"].map((t) => element("th", { scope: "col", text: t })))),
    element("tbody", {}, ...rows),
  );
  // Tests and assistive code can tell which state the rows shown belong to.
  $("jobs").dataset.state = state;
}

/** Open a job's details and move the focus there (a keyboard user goes on to its buttons). */
async function showJob(id) {
  try {
    await detail(id);
    $("job-title").focus();
  } catch (error) {
    say(`Job #${id} could not be read: ${error.message}`);
  }
}

/** Every attempt of the job: when, by which worker, how it ended, its error (masked). */
function historyTable(history) {
  const rows = (history || []).map((entry) =>
    element(
      "tr",
      {},
      element("th", { scope: "row", text: String(entry.attempt ?? "") }),
      element("td", { text: when(entry.started_at) || "—" }),
      element("td", { text: entry.outcome || "running" }),
      element("td", { text: masked(entry.error) || "—" }),
    ),
  );
  if (!rows.length) return element("p", { className: "note", text: "Not run yet." });
  return element(
    "table",
    {},
    element("caption", { text: "Attempts" }),
    element("thead", {}, element("tr", {}, ...["Attempt", "Started", "Outcome", "Error"].map((t) => element("th", { scope: "col", text: t })))),
    element("tbody", {}, ...rows),
  );
}

async function detail(id) {
  const job = await jobsApi.get(root, id);
  shownJob = id;
  const act = (label, action, done, disabled = false) =>
    element("button", {
      type: "button",
      text: label,
      disabled,
      onclick: async () => {
        try {
          await action(root, id);
        } catch (error) {
          say(`${label} failed: ${error.message}`);
          return;
        }
        if (label === "Delete") {
          shownJob = null;
          $("detail").replaceChildren(element("p", { className: "note", text: done }));
        }
        try {
          await refresh(); // the list, the counts and (after Retry) this job's new state
          say(done); // said once the page shows the outcome
        } catch (error) {
          say(`${done} The page could not be refreshed: ${error.message}`);
        }
        // The pressed button was replaced: keep the keyboard user's place.
        $(shownJob === null ? "detail-title" : "job-title").focus();
      },
    });
  // Only a finished job can run again (the API answers 409 otherwise).
  const unfinished = job.state === "pending" || job.state === "running";
  $("detail").replaceChildren(
    element("h3", { id: "job-title", tabIndex: -1, text: `Job #${job.id}: ${job.model} (${job.state})` }),
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
    historyTable(job.history),
    act("Retry", jobsApi.retry, `Job #${id} queued again.`, unfinished),
    act("Delete", jobsApi.remove, `Job #${id} deleted.`),
  );
}

async function refresh() {
  await Promise.all([showApprovals(), depth(), list()]);
  if (shownJob === null) return;
  try {
    await detail(shownJob); // its state may have moved on (a retried job running, succeeded)
  } catch (error) {
    if (error.status !== 404) throw error;
    shownJob = null;
    $("detail").replaceChildren(element("p", { className: "note", text: "That job is gone (deleted elsewhere)." }));
  }
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
    // A token without the admin role sees the sign-in form again with why, and no job data.
    if (error.status === 403) showLogin(`This token lacks the admin role, which the jobs page needs (${error.message}). Sign in with an administrator's token.`);
    else if (error.status !== 401) say(`The jobs could not be read: ${error.message}`);
  }
}

async function start() {
  const config = await dashboardConfig();
  root = config.jobs || "/jobs";
  onUnauthorized((reason) => showLogin(`Not signed in: ${reason}`));
  setUpApprovals(say, refresh);
  $("refresh").onclick = () => refresh().catch((error) => say(error.message));
  $("state").onchange = () => list().catch((error) => say(error.message));
  authNeeded = config.auth;
  if (await signIn(config, open)) await open();
}

start().catch((error) => say(`The jobs page could not start: ${error.message}`));
