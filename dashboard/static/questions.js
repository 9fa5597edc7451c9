// Asking questions: the cost before each one, the budget after, and no question twice.
//
// Every answer is kept for the page's lifetime under its question in canonical form: a
// filter switched off and on again shows the same answer without asking (cost 0). A new
// question is first priced with POST /cost (a site says its epsilon, 0 when the server has
// it cached, and whether the budget pays it); a question the budget cannot pay is not sent.

import { canonical } from "./cohort.js";

export class Questions {
  constructor(api) {
    this.api = api;
    this.answers = new Map(); // canonical question -> answer
    this.budget = null; // the last budget the server reported
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
    // Pay in order while the budget lasts; the rest is not sent.
    let remaining = null;
    const plan = { fresh: fresh.length, reused: requests.length - fresh.length, epsilon: 0, unknown: false, notSent: 0 };
    fresh.forEach((i, n) => {
      const cost = costs[n];
      if (cost === null) {
        plan.unknown = true; // this server does not price questions (a hub without /cost)
        return;
      }
      if (cost.error) {
        outcomes[i] = { error: cost.error.message };
        return;
      }
      this.mode = cost.mode;
      if (cost.mode === "exact") {
        if (remaining === null) remaining = cost.questions_remaining;
        if (remaining < 1) outcomes[i] = { notSent: "no exact questions left in this period" };
        else remaining -= 1;
        this.budget = { mode: "exact", questions_remaining: cost.questions_remaining, questions_used: cost.questions_used };
        return;
      }
      const budget = cost.budget || {};
      this.budget = { mode: "dp", ...budget };
      if (remaining === null) {
        remaining = Math.min(budget.epsilon_remaining ?? Infinity, budget.site_epsilon_remaining ?? Infinity);
      }
      if (cost.epsilon > remaining + 1e-9 || cost.affordable === false) {
        outcomes[i] = { notSent: `would cost ε ${cost.epsilon}, more than the ε ${remaining.toFixed(2)} left` };
      } else {
        remaining -= cost.epsilon;
        plan.epsilon += cost.epsilon;
        if (cost.epsilon === 0) plan.cachedByServer = (plan.cachedByServer || 0) + 1;
      }
    });
    plan.notSent = outcomes.filter((o) => o && o.notSent).length;
    onCost(plan);
    await Promise.all(
      fresh.map(async (i) => {
        if (outcomes[i] !== null) return;
        try {
          const answer = await this.api.aggregate(requests[i]);
          this.answers.set(canonical(requests[i]), answer);
          if (answer.budget) this.budget = { mode: "dp", ...answer.budget };
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
