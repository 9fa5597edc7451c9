// Asking questions: the cost before each one, the budget after, and no question twice.
//
// Every answer is kept for the page's lifetime under its question in canonical form: a
// filter switched off and on again shows the same answer without asking (cost 0). A new
// question is first priced with POST /cost (a site says its epsilon, 0 when the server has
// it cached, and whether the budget pays it; a hub lists each site's answer); a question that
// a budget cannot pay is not sent.

import { canonical } from "./cohort.js";

/** One ledger's part of a /cost answer: {mode: "dp", epsilon, cached, affordable, remaining}
 * or {mode: "exact", remaining} (questions left). */
function partOf(answer) {
  if (answer.mode === "exact") {
    const remaining = answer.questions_remaining ?? 0;
    return { mode: "exact", remaining, affordable: remaining > 0 };
  }
  const budget = answer.budget || {};
  return {
    mode: "dp",
    epsilon: Number(answer.epsilon ?? 0),
    cached: Boolean(answer.cached),
    affordable: answer.affordable !== false,
    remaining: Math.min(budget.epsilon_remaining ?? Infinity, budget.site_epsilon_remaining ?? Infinity),
  };
}

/**
 * A /cost answer as the ledgers that charge it: a site's answer is one part (name null); a
 * hub's lists each site (openapi/federated.yaml /cost), a site that did not answer with its
 * status and no price (it is not asked either, and does not make a question unaffordable).
 */
export function costParts(cost) {
  if (Array.isArray(cost.sites)) {
    return cost.sites.map((site) =>
      site.status === "ok" && site.answer
        ? { name: site.name, ...partOf(site.answer) }
        : { name: site.name, unanswered: site.status, error: site.error },
    );
  }
  return [{ name: null, ...partOf(cost) }];
}

/** What a priced question costs in all: epsilon summed over the parts, exact questions. */
export function priceOf(cost) {
  const parts = costParts(cost).filter((p) => !p.unanswered);
  return {
    parts,
    epsilon: parts.filter((p) => p.mode === "dp").reduce((sum, p) => sum + p.epsilon, 0),
    exact: parts.some((p) => p.mode === "exact"),
    affordable: cost.affordable !== false && parts.length > 0 && parts.every((p) => p.affordable),
  };
}

export class Questions {
  constructor(api) {
    this.api = api;
    this.answers = new Map(); // canonical question -> answer
    this.budget = null; // the last budget the server reported (a site's)
    this.mode = null; // "dp" or "exact", as the server answers this person
  }

  known(request) {
    return this.answers.get(canonical(request));
  }

  /**
   * Ask every request (in parallel); `onCost` hears the priced plan before anything is sent.
   * Returns one outcome per request: {answer, reused, epsilon} or {notSent: reason} or
   * {error}.
   */
  async askAll(requests, onCost = () => {}) {
    const outcomes = requests.map((request) => {
      const answer = this.known(request);
      return answer ? { answer, reused: true, epsilon: 0 } : null;
    });
    const fresh = requests.map((r, i) => i).filter((i) => outcomes[i] === null);
    const costs = await Promise.all(
      fresh.map((i) => this.api.cost(requests[i]).catch((error) => ({ error }))),
    );
    // Pay in order while every ledger lasts (one per site at a hub); the rest is not sent.
    const remaining = new Map(); // ledger (site name, or null for this site) -> what is left
    const plan = { fresh: fresh.length, reused: requests.length - fresh.length, epsilon: 0, unknown: false, notSent: 0, sites: new Map() };
    fresh.forEach((i, n) => {
      const cost = costs[n];
      if (cost === null) {
        plan.unknown = true; // this server does not price questions (no /cost)
        return;
      }
      if (cost.error) {
        outcomes[i] = { error: cost.error.message };
        return;
      }
      const price = priceOf(cost);
      if (price.parts.length) this.mode = price.exact && price.parts.every((p) => p.mode === "exact") ? "exact" : "dp";
      if (!Array.isArray(cost.sites)) this.budget = cost.mode === "exact"
        ? { mode: "exact", questions_remaining: cost.questions_remaining, questions_used: cost.questions_used }
        : { ...(this.budget || {}), mode: "dp", ...(cost.budget || {}) };
      const short = price.parts.filter((part) => {
        if (!remaining.has(part.name)) remaining.set(part.name, part.remaining);
        const needed = part.mode === "exact" ? 1 : part.epsilon;
        return !part.affordable || needed > remaining.get(part.name) + 1e-9;
      });
      if (!price.affordable || short.length) {
        const who = short.filter((p) => p.name).map((p) => p.name);
        outcomes[i] = {
          notSent: price.parts.length === 0
            ? "no site could price it"
            : `${price.exact ? "no exact questions left in this period" : `would cost ${price.epsilon.toFixed(2)} ε, more than is left`}${who.length ? ` at ${who.join(", ")}` : ""}`,
        };
        return;
      }
      for (const part of price.parts) {
        remaining.set(part.name, remaining.get(part.name) - (part.mode === "exact" ? 1 : part.epsilon));
        if (part.name) plan.sites.set(part.name, (plan.sites.get(part.name) || 0) + (part.epsilon || 0));
      }
      plan.epsilon += price.epsilon;
      if (price.parts.every((p) => p.mode === "dp" && p.epsilon === 0)) plan.cachedByServer = (plan.cachedByServer || 0) + 1;
    });
    plan.notSent = outcomes.filter((o) => o && o.notSent).length;
    onCost(plan);
    await Promise.all(
      fresh.map(async (i) => {
        if (outcomes[i] !== null) return;
        try {
          const answer = await this.api.aggregate(requests[i]);
          this.answers.set(canonical(requests[i]), answer);
          if (answer.budget) this.budget = { ...(this.budget || {}), mode: "dp", ...answer.budget };
          const epsilon = answer.privacy && answer.privacy.epsilon != null ? answer.privacy.epsilon : null;
          outcomes[i] = { answer, reused: false, epsilon, cachedByServer: Boolean(answer.privacy && answer.privacy.cached) };
        } catch (error) {
          outcomes[i] = { error: error.message, status: error.status };
        }
      }),
    );
    if (this.budget && this.budget.mode === "exact") {
      const asked = fresh.filter((i) => outcomes[i] && outcomes[i].answer).length;
      this.budget.questions_remaining = Math.max(0, this.budget.questions_remaining - asked);
    }
    return outcomes;
  }
}
