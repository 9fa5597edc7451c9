// Every call the dashboard makes, in one place (docs/dashboard.md).
// The token is kept in sessionStorage (gone when the tab closes) and sent as Authorization;
// it is never put in a URL, a saved cohort or an exported file.

const TOKEN_KEY = "fedgate.token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorized = () => {};
/** Called with the reason when the API answers 401 (no or a bad token): show the login. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function reasonOf(body) {
  if (!body) return null;
  if (typeof body.error === "string") return body.error;
  if (body.error && typeof body.error.message === "string") return body.error.message;
  return null;
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  // JSON for answers; some refusals (401/403 outside the federated API) are plain text.
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const plain = data === null ? text.trim().split("\n")[0].slice(0, 300) : "";
    const reason = reasonOf(data) || plain || `HTTP ${response.status}`;
    if (response.status === 401) unauthorized(reason);
    throw new ApiError(response.status, reason, data);
  }
  return data;
}

export const dashboardConfig = () => call("GET", "/ui/config.json");

/** The federated API of this site or hub (its root, e.g. /federated/v1). */
export class FederatedApi {
  constructor(root) {
    this.root = root;
    this.costKnown = true; // false once the server says it has no /cost (404)
  }

  aggregate(request) {
    return call("POST", `${this.root}/aggregate`, request);
  }

  /** What `request` would cost now; null when this server does not say (no /cost). */
  async cost(request) {
    if (!this.costKnown) return null;
    try {
      return await call("POST", `${this.root}/cost`, request);
    } catch (error) {
      if (error.status === 404 || error.status === 405) {
        this.costKnown = false;
        return null;
      }
      throw error;
    }
  }

  /** The person's budget; null when this server does not say (no /budget). */
  async budget() {
    try {
      return await call("GET", `${this.root}/budget`);
    } catch (error) {
      if (error.status === 404 || error.status === 405) return null;
      throw error;
    }
  }

  /** Every option the builder may offer, as the privacy layer released it (the `vocabulary`
   * answer; vocabulary.js maps it into the builder's options); null when the server has no
   * vocabulary endpoint (404). The one call of that endpoint: for the `query` role it is a
   * charged question (price it first with `cost(VOCABULARY_QUESTION)`). */
  async vocabulary() {
    try {
      return await call("GET", `${this.root}/vocabulary`);
    } catch (error) {
      if (error.status === 404 || error.status === 405) return null;
      throw error;
    }
  }
}

/** GET /vocabulary as an /aggregate body: what /cost prices for it. */
export const VOCABULARY_QUESTION = Object.freeze({ aggregate: { kind: "vocabulary" } });

/** The site's job API (admin role). */
export const jobsApi = {
  list: (root, params) => call("GET", `${root}?${new URLSearchParams(params)}`),
  get: (root, id) => call("GET", `${root}/${encodeURIComponent(id)}`),
  retry: (root, id) => call("POST", `${root}/${encodeURIComponent(id)}/retry`),
  remove: (root, id) => call("DELETE", `${root}/${encodeURIComponent(id)}`),
};
