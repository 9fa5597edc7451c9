// The cohort dashboard: the builder, the attrition table, the budget, charts and saved cohorts.
// At a site the numbers are the site's; at a hub each site has a column and a total is shown.

import { FederatedApi, clearToken, dashboardConfig, onUnauthorized } from "./api.js";
import { FILTER_KINDS, attritionSteps, cohortOf, describe, filtersFromCohort, newFilter } from "./cohort.js";
import { chartControls } from "./charts.js";
import { element, filterFieldset } from "./filters.js";
import { countKind, countText, epsilonText } from "./format.js";
import { showLogin, signIn } from "./login.js";
import { Questions } from "./questions.js";
import { savedCohorts } from "./saved.js";
import { FIXED_VOCABULARY } from "./vocabulary.js";

const state = {
  config: null,
  api: null,
  questions: null,
  vocabulary: FIXED_VOCABULARY,
  filters: [],
  generation: 0,
};

const $ = (id) => document.getElementById(id);

function say(text) {
  $("status").textContent = text;
}

export function countRequest(cohort) {
  return { cohort, level: "patients", aggregate: { kind: "count" } };
}

async function start() {
  state.config = await dashboardConfig();
  const hub = state.config.kind === "hub";
  document.title = `fedgate cohort dashboard (${hub ? "hub: all sites" : "this site"})`;
  $("title").textContent = hub ? "Cohort dashboard — all sites of this hub" : "Cohort dashboard — this site";
  $("jobs-link").hidden = !state.config.jobs;
  state.api = new FederatedApi(state.config.api);
  state.questions = new Questions(state.api);
  onUnauthorized((reason) => showLogin(`Not signed in: ${reason}`));
  if (await signIn(state.config, open)) await open();
}

async function open() {
  $("login").hidden = true;
  $("app").hidden = false;
  if (state.config.auth) {
    $("who").replaceChildren(
      element("button", {
        type: "button",
        text: "Sign out",
        onclick: () => {
          clearToken();
          location.reload();
        },
      }),
    );
  }
  try {
    state.vocabulary = await state.api.vocabulary(FIXED_VOCABULARY);
  } catch (error) {
    if (error.status === 401) return;
    say(`The options could not be loaded: ${error.message}`);
  }
  $("vocabulary-source").textContent =
    state.vocabulary.source === "server"
      ? "The options are what the sites hold, as released through the privacy layer."
      : "This server lists no options of its own: the builder offers fixed lists.";
  setUpAdd();
  setUpCharts();
  setUpSaved();
  await showBudget();
  const shared = cohortInFragment();
  if (shared) loadCohort(shared, "the link");
  else render();
}

// -- the builder -------------------------------------------------------------------------------

function setUpAdd() {
  const kinds = $("add-kind");
  kinds.replaceChildren(...Object.entries(FILTER_KINDS).map(([value, kind]) => element("option", { value, text: kind.label })));
  $("add-filter").onclick = () => {
    const kind = kinds.value;
    const attribute = FILTER_KINDS[kind].attribute;
    if (attribute && state.filters.some((f) => FILTER_KINDS[f.kind].attribute === attribute)) {
      say(`There is already a ${FILTER_KINDS[kind].label.toLowerCase()} filter: change that one.`);
      return;
    }
    const filter = newFilter(kind, state.vocabulary);
    state.filters.push(filter);
    render();
    const first = document.querySelector(`[data-filter-id="${filter.id}"] .fields input, [data-filter-id="${filter.id}"] .fields select`);
    if (first) first.focus();
  };
  $("clear-filters").onclick = () => {
    state.filters = [];
    render();
  };
}

function render() {
  const container = $("filters");
  container.replaceChildren(
    ...state.filters.map((filter, position) =>
      filterFieldset(filter, position, state.filters.length, state.vocabulary, {
        update: (changes) => {
          Object.assign(filter, changes);
          rerenderKeepingFocus();
        },
        remove: () => {
          state.filters.splice(position, 1);
          render();
          $("add-kind").focus();
        },
        move: (delta) => {
          const [moved] = state.filters.splice(position, 1);
          state.filters.splice(position + delta, 0, moved);
          rerenderKeepingFocus();
        },
      }),
    ),
  );
  if (!state.filters.length) container.append(element("p", { className: "note", text: "No filter yet: every patient is counted. Add a filter above." }));
  showRequest();
  refreshAttrition();
}

/** Re-render and put the focus back on the same control (keyboard use keeps its place). */
function rerenderKeepingFocus() {
  const focused = document.activeElement && document.activeElement.id;
  render();
  if (focused && $(focused)) $(focused).focus();
}

// -- the attrition table ---------------------------------------------------------------------

function siteCell(site) {
  switch (site.status) {
    case "ok":
    case "suppressed":
      return { text: countText(site.answer, site.answer && site.answer.min_cell_size), kind: countKind(site.answer), className: site.status === "suppressed" ? "number suppressed" : "number" };
    case "timeout":
      return { text: "timed out", kind: site.error, className: "failed" };
    case "refused":
      return { text: /budget/i.test(site.error || "") ? "refused: budget" : "refused", kind: site.error, className: "failed" };
    default:
      return { text: "error", kind: site.error, className: "failed" };
  }
}

function outcomeCell(outcome) {
  if (!outcome) return { text: "…", kind: "asking", className: "number" };
  if (outcome.notSent) return { text: "not sent: over budget", kind: outcome.notSent, className: "failed" };
  if (outcome.error) return { text: outcome.status === 403 ? "refused" : "error", kind: outcome.error, className: "failed" };
  const answer = outcome.answer;
  return { text: countText(answer, answer.min_cell_size), kind: countKind(answer), className: answer.suppressed ? "number suppressed" : "number" };
}

function costText(outcome) {
  if (!outcome) return "";
  if (outcome.reused) return "0 (answered before)";
  if (outcome.answer && outcome.epsilon != null) return outcome.cachedByServer || outcome.epsilon === 0 ? "0 (cached)" : epsilonText(outcome.epsilon);
  if (outcome.answer && state.questions.mode === "exact") return "1 question";
  return "";
}

function td(cell, extra = {}) {
  return element("td", { className: cell.className, title: cell.kind || undefined, ...extra }, cell.text);
}

async function refreshAttrition() {
  const generation = ++state.generation;
  const started = performance.now();
  const steps = attritionSteps(state.filters);
  const requests = steps.map((step) => countRequest(step.cohort));
  const table = $("attrition");
  table.dataset.state = "asking";
  const outcomes = await state.questions.askAll(requests, (plan) => {
    if (generation === state.generation) showPlan(plan);
  });
  if (generation !== state.generation) return; // a newer change is being asked
  drawAttrition(steps, outcomes);
  table.dataset.state = "done";
  table.dataset.generation = String(generation);
  performance.measure("fedgate:count", { start: started, end: performance.now() });
  showBudget(false);
}

function drawAttrition(steps, outcomes) {
  const table = $("attrition");
  const hub = state.config.kind === "hub";
  const siteNames = [];
  if (hub) {
    for (const outcome of outcomes) {
      for (const site of (outcome && outcome.answer && outcome.answer.sites) || []) {
        if (!siteNames.includes(site.name)) siteNames.push(site.name);
      }
    }
  }
  const head = element("tr", {}, element("th", { scope: "col", text: "Step" }), element("th", { scope: "col", text: "Filter" }));
  for (const name of siteNames) head.append(element("th", { scope: "col", text: name }));
  head.append(element("th", { scope: "col", text: hub ? "All sites" : "Patients" }), element("th", { scope: "col", text: "Cost" }));
  const rows = steps.map((step, i) => {
    const outcome = outcomes[i];
    const row = element(
      "tr",
      { "data-step": String(i) },
      element("td", { className: "number", text: String(i) }),
      element("th", { scope: "row", text: step.filter ? describe(step.filter) : "All patients" }),
    );
    for (const name of siteNames) {
      const site = outcome && outcome.answer && (outcome.answer.sites || []).find((s) => s.name === name);
      row.append(td(site ? siteCell(site) : { text: "—", className: "failed" }, { "data-site": name }));
    }
    row.append(td(outcomeCell(outcome), { "data-total": "" }));
    row.append(element("td", { text: costText(outcome) }));
    return row;
  });
  table.replaceChildren(
    element("caption", { text: hub ? "Patients after each filter, per site and all sites together" : "Patients after each filter" }),
    element("thead", {}, head),
    element("tbody", {}, ...rows),
  );
}

// -- the budget --------------------------------------------------------------------------------

function showPlan(plan) {
  const parts = [];
  if (plan.fresh) {
    parts.push(
      plan.unknown
        ? `${plan.fresh} new question(s); this hub does not price questions (each site charges its own budget)`
        : state.questions.mode === "exact"
          ? `${plan.fresh} new exact question(s)`
          : `${plan.fresh} new question(s) cost ${epsilonText(plan.epsilon)}${plan.cachedByServer ? ` (${plan.cachedByServer} cached by the server: cost 0)` : ""}`,
    );
  }
  if (plan.reused) parts.push(`${plan.reused} answered before: cost 0`);
  if (plan.notSent) parts.push(`${plan.notSent} not sent: over budget`);
  $("budget-last").textContent = parts.length ? `This change: ${parts.join("; ")}.` : "";
}

async function showBudget(ask = true) {
  let budget = state.questions.budget;
  if (ask || !budget) {
    try {
      const fresh = await state.api.budget();
      if (fresh) budget = state.questions.budget = fresh;
    } catch (error) {
      if (error.status === 401) return;
    }
  }
  const hub = state.config.kind === "hub";
  if (!budget) {
    $("budget-remaining").textContent = hub
      ? "Remaining budget: each site keeps your budget; see the sites' answers."
      : "Remaining budget: not known.";
  } else if (budget.mode === "exact") {
    state.questions.mode = "exact";
    $("budget-remaining").textContent = `Exact answers: ${budget.questions_remaining} question(s) left in this period.`;
  } else {
    state.questions.mode = "dp";
    $("budget-remaining").textContent = `Remaining budget: ${epsilonText(budget.epsilon_remaining)} of your budget${budget.period_days ? ` per ${budget.period_days} day(s)` : ""} (site: ${epsilonText(budget.site_epsilon_remaining ?? 0)}).`;
  }
  await showNextCost();
}

/** The cost of the next question: the cohort as it stands with one more filter is a new
 * question; priced with /cost for the current cohort's count (free if answered before). */
async function showNextCost() {
  const request = countRequest(cohortOf(state.filters));
  if (state.questions.known(request)) {
    $("budget-next").textContent = `Cost of the next question: a new filter is one new question${perQuestion()}; switching a filter off and on again costs 0.`;
    return;
  }
  $("budget-next").textContent = `Cost of the next question: ${perQuestion().replace(/^, /, "") || "not reported by this server"}.`;
}

function perQuestion() {
  const budget = state.questions.budget;
  if (budget && budget.mode === "exact") return ", 1 exact question";
  if (budget && budget.epsilon_per_query != null) return `, ${epsilonText(budget.epsilon_per_query)}`;
  if (budget && state.lastEpsilon) return `, ${epsilonText(state.lastEpsilon)}`;
  return "";
}

// -- the request, saved cohorts, sharing -----------------------------------------------------

function showRequest() {
  const request = countRequest(cohortOf(state.filters));
  const json = JSON.stringify(request, null, 2);
  $("request-json").textContent = json;
  const url = new URL(`${state.config.api}/aggregate`, location.origin).href;
  const compact = JSON.stringify(request).replaceAll("'", "'\\''");
  $("curl").textContent = `curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" -d '${compact}' ${url}`;
  $("share-url").value = `${location.origin}/ui/#cohort=${encodeURIComponent(JSON.stringify(request.cohort))}`;
  const exported = $("export");
  if (exported.href.startsWith("blob:")) URL.revokeObjectURL(exported.href);
  exported.href = URL.createObjectURL(new Blob([json + "\n"], { type: "application/json" }));
}

function cohortInFragment() {
  const match = location.hash.match(/^#cohort=(.*)$/);
  if (!match) return null;
  try {
    return JSON.parse(decodeURIComponent(match[1]));
  } catch {
    say("The link's cohort is not valid JSON.");
    return null;
  }
}

function loadCohort(cohort, from) {
  try {
    state.filters = filtersFromCohort(cohort);
  } catch (error) {
    say(`The cohort from ${from} cannot be shown here: ${error.message}`);
    return false;
  }
  say(`Loaded the cohort from ${from}.`);
  render();
  return true;
}

function setUpSaved() {
  const store = savedCohorts();
  const list = $("saved-list");
  const refresh = (selected) => {
    const names = store.names();
    list.replaceChildren(...names.map((name) => element("option", { value: name, text: name, selected: name === selected })));
    for (const id of ["load", "rename", "delete"]) $(id).disabled = names.length === 0;
  };
  refresh();
  $("save").onclick = () => {
    const name = $("save-name").value.trim();
    if (!name) {
      say("Give the cohort a name first.");
      $("save-name").focus();
      return;
    }
    store.save(name, cohortOf(state.filters));
    refresh(name);
    say(`Saved "${name}".`);
  };
  $("load").onclick = () => {
    const cohort = store.get(list.value);
    if (cohort) loadCohort(cohort, `"${list.value}"`);
  };
  $("rename").onclick = () => {
    const name = $("save-name").value.trim();
    if (!name) {
      say("Type the new name in the Name field first.");
      $("save-name").focus();
      return;
    }
    store.rename(list.value, name);
    refresh(name);
    say(`Renamed to "${name}".`);
  };
  $("delete").onclick = () => {
    const name = list.value;
    store.remove(name);
    refresh();
    say(`Deleted "${name}".`);
  };
  window.addEventListener("hashchange", () => {
    const cohort = cohortInFragment();
    if (cohort) loadCohort(cohort, "the link");
  });
}

// -- charts ------------------------------------------------------------------------------------

function setUpCharts() {
  if (!state.config.charts || !window.vegaEmbed) {
    const missing = $("charts-missing");
    missing.hidden = false;
    missing.textContent = `Charts need the chart library, which is not installed on this server (${(state.config.missing_assets || []).join(", ") || "vega-embed"}): run scripts/setup.sh. Counts work without it.`;
  }
  chartControls($("chart-controls"), {
    vocabulary: () => state.vocabulary,
    cohort: () => cohortOf(state.filters),
    questions: () => state.questions,
    hub: state.config.kind === "hub",
    chart: $("chart"),
    table: $("chart-table"),
    say,
    onPlan: showPlan,
    afterAsk: () => showBudget(false),
  });
}

start().catch((error) => say(`The dashboard could not start: ${error.message}`));
