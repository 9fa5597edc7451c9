// The cohort dashboard: the builder, the attrition table, the budget, charts and saved cohorts.
// At a site the numbers are the site's; at a hub each site has a column and a total is shown.

import { FederatedApi, VOCABULARY_QUESTION, clearToken, dashboardConfig, onUnauthorized } from "./api.js";
import { FILTER_KINDS, attritionSteps, cohortOf, describe, filtersFromCohort, newFilter } from "./cohort.js";
import { chartControls } from "./charts.js";
import { element, filterFieldset } from "./filters.js";
import { countKind, countText, epsilonText } from "./format.js";
import { showLogin, signIn } from "./login.js";
import { Questions, priceOf } from "./questions.js";
import { savedCohorts } from "./saved.js";
import { NO_VOCABULARY, builderVocabulary } from "./vocabulary.js";

const state = {
  config: null,
  api: null,
  questions: null,
  vocabulary: NO_VOCABULARY,
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
  if (!(await loadVocabulary())) return;
  setUpAdd();
  setUpCharts();
  setUpSaved();
  await showBudget();
  const shared = cohortInFragment();
  if (shared) loadCohort(shared, "the link");
  else render();
}

// -- the options (the vocabulary) ---------------------------------------------------------

/** The price of a question as words: "ε 0.75", "0 (answered before in this period)", "1 exact
 * question", at a hub the sum with each site's part. */
function priceText(cost) {
  const price = priceOf(cost);
  const own = (part) =>
    part.mode === "exact" ? "1 exact question" : part.epsilon === 0 ? "0 (answered before in this period)" : epsilonText(part.epsilon);
  if (!Array.isArray(cost.sites)) return own(price.parts[0]);
  const sites = costSitesText(cost);
  return price.exact ? `1 exact question at each site (${sites})` : `${epsilonText(price.epsilon)} in all (${sites})`;
}

/** Each site's part of a hub's /cost answer, a site that did not answer with its status. */
function costSitesText(cost) {
  return cost.sites
    .map((site) => {
      if (site.status !== "ok" || !site.answer) return `${site.name}: no answer (${site.status})`;
      if (site.answer.mode === "exact") return `${site.name} 1 exact question`;
      return `${site.name} ${epsilonText(site.answer.epsilon ?? 0)}`;
    })
    .join(", ");
}

/**
 * The builder's options from the server's vocabulary. It is a question like any other (for
 * the query role charged once per period, then cached; for the exact role one of the capped
 * questions), so it is priced with /cost first and the price shown before it is asked; one the
 * budget cannot pay is not asked, and the builder offers free-text inputs instead. False when
 * the person must sign in first.
 */
async function loadVocabulary() {
  const note = $("vocabulary-source");
  const free = "type the values instead (codes as SCHEME:CODE)";
  let cost;
  try {
    cost = await state.api.cost(VOCABULARY_QUESTION);
  } catch (error) {
    if (error.status === 401) return false;
    note.textContent = `The options could not be priced (${error.message}): ${free}.`;
    return true;
  }
  if (cost) {
    const price = priceText(cost);
    if (!priceOf(cost).affordable) {
      note.textContent = `The options are not loaded: loading them would cost ${price}, more than your budget has left; ${free}.`;
      note.dataset.cost = "unaffordable";
      return true;
    }
    note.textContent = `Loading the options (what the sites hold) costs ${price}…`;
    note.dataset.cost = price;
  }
  let answer;
  try {
    answer = await state.api.vocabulary();
  } catch (error) {
    if (error.status === 401) return false;
    note.textContent = `The options could not be loaded (${error.message}): ${free}.`;
    return true;
  }
  if (!answer) {
    note.textContent = `This server lists no options: ${free}.`;
    return true;
  }
  state.vocabulary = builderVocabulary(answer);
  const paid = cost ? ` Loading them cost ${priceText(cost)}.` : "";
  note.textContent =
    "The options are what the sites hold, as released through the privacy layer (a value few patients hold is not listed), most common first." +
    ` How common only orders them: it is not a cohort size.${paid}`;
  note.dataset.state = "loaded";
  return true;
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
    const sites = [...plan.sites].map(([name, epsilon]) => `${name} ${epsilonText(epsilon)}`).join(", ");
    parts.push(
      plan.unknown
        ? `${plan.fresh} new question(s); this server does not price questions (each site charges its own budget)`
        : state.questions.mode === "exact"
          ? `${plan.fresh} new exact question(s)`
          : `${plan.fresh} new question(s) cost ${epsilonText(plan.epsilon)}${sites ? ` (${sites})` : ""}${plan.cachedByServer ? ` (${plan.cachedByServer} cached by the server: cost 0)` : ""}`,
    );
  }
  if (plan.reused) parts.push(`${plan.reused} answered before: cost 0`);
  if (plan.notSent) parts.push(`${plan.notSent} not sent: over budget`);
  $("budget-last").textContent = parts.length ? `This change: ${parts.join("; ")}.` : "";
}

/** One budget (a site's /budget answer) in words. */
function budgetText(budget) {
  if (budget.mode === "exact") return `${budget.questions_remaining} exact question(s) left in this period`;
  return `${epsilonText(budget.epsilon_remaining)} left${budget.period_days ? ` per ${budget.period_days} day(s)` : ""} (the site's own: ${epsilonText(budget.site_epsilon_remaining ?? 0)})`;
}

async function showBudget(ask = true) {
  const hub = state.config.kind === "hub";
  let budget = state.questions.budget;
  // A hub's budget is each site's: asked again after every change (its answers do not carry it).
  if (ask || hub || !budget) {
    try {
      const fresh = await state.api.budget();
      if (fresh) budget = fresh;
      if (fresh && !hub) state.questions.budget = fresh;
    } catch (error) {
      if (error.status === 401) return;
    }
  }
  const remaining = $("budget-remaining");
  if (!budget) {
    remaining.textContent = hub
      ? "Remaining budget: each site keeps your budget; see the sites' answers."
      : "Remaining budget: not known.";
  } else if (Array.isArray(budget.sites)) {
    // GET /budget at a hub: each site's answer with its status (there is no combined budget).
    remaining.replaceChildren(
      "Remaining budget at each site (each site keeps its own):",
      element(
        "ul",
        { id: "budget-sites" },
        ...budget.sites.map((site) =>
          element(
            "li",
            { "data-site": site.name },
            site.status === "ok" && site.answer ? `${site.name}: ${budgetText(site.answer)}` : `${site.name}: not known (${site.status})`,
          ),
        ),
      ),
    );
    state.hubBudget = budget;
    const answered = budget.sites.filter((site) => site.status === "ok" && site.answer);
    if (answered.length) state.questions.mode = answered.every((site) => site.answer.mode === "exact") ? "exact" : "dp";
  } else if (budget.mode === "exact") {
    state.questions.mode = "exact";
    remaining.textContent = `Exact answers: ${budget.questions_remaining} question(s) left in this period.`;
  } else {
    state.questions.mode = "dp";
    remaining.textContent = `Remaining budget: ${epsilonText(budget.epsilon_remaining)} of your budget${budget.period_days ? ` per ${budget.period_days} day(s)` : ""} (site: ${epsilonText(budget.site_epsilon_remaining ?? 0)}).`;
  }
  await showNextCost();
}

/** The cost of the next question: the cohort as it stands with one more filter is a new
 * question, which each site prices at its epsilon per question (free if answered before). */
async function showNextCost() {
  const request = countRequest(cohortOf(state.filters));
  const each = perQuestion();
  if (state.questions.known(request)) {
    $("budget-next").textContent = `Cost of the next question: a new filter is one new question${each ? `, ${each}` : ""}; switching a filter off and on again costs 0.`;
    return;
  }
  $("budget-next").textContent = `Cost of the next question: ${each || "not reported by this server"}.`;
}

function perQuestion() {
  const hub = state.hubBudget;
  if (state.config.kind === "hub" && hub) {
    const answered = hub.sites.filter((site) => site.status === "ok" && site.answer);
    if (!answered.length) return "";
    if (answered.every((site) => site.answer.mode === "exact")) return "1 exact question at each site";
    const total = answered.reduce((sum, site) => sum + (site.answer.epsilon_per_query ?? 0), 0);
    return `${epsilonText(total)} in all (${answered.map((site) => `${site.name} ${site.answer.mode === "exact" ? "1 exact question" : epsilonText(site.answer.epsilon_per_query ?? 0)}`).join(", ")})`;
  }
  const budget = state.questions.budget;
  if (budget && budget.mode === "exact") return "1 exact question";
  if (budget && budget.epsilon_per_query != null) return epsilonText(budget.epsilon_per_query);
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
