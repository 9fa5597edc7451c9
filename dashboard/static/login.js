// Sign-in, for every page: the token form, and "Sign in with <provider>" where the server has
// an OpenID provider with the dashboard registered as a public client (docs/dashboard.md).
//
// The OpenID Connect sign-in is the authorization code flow with PKCE (RFC 7636), done here in
// the browser: the page sends the user to the provider with a fresh `state` and the S256
// challenge of a fresh `code_verifier` (both kept in sessionStorage, this tab only); the
// provider sends the user back to /ui/?code=...&state=...; the page strips the query from the
// address bar at once, refuses an answer whose `state` is not the one it sent (RFC 6749 10.12:
// a forged or replayed link), and exchanges the code with the verifier at the token endpoint.
// The access token is kept like a pasted one: in sessionStorage, sent as Authorization, never
// in a URL or localStorage; the API verifies it (issuer, audience, roles) as any other.

import { setToken, token } from "./api.js";

const PENDING_KEY = "fedgate.oidc.pending";
const $ = (id) => document.getElementById(id);

/** The one redirect URI of the dashboard: register exactly this at the provider. */
export const redirectUri = () => `${location.origin}/ui/`;

/** Show the login section (and hide the page) with an optional reason. */
export function showLogin(reason) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
  $("who").replaceChildren();
  ($("oidc-sign-in") || $("token")).focus();
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(size) {
  const bytes = new Uint8Array(size);
  crypto.getRandomValues(bytes);
  return base64url(bytes);
}

/** RFC 7636 4.2: code_challenge = BASE64URL(SHA256(ASCII(code_verifier))). */
async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

/** Go to the provider's sign-in page; come back to `back` (this page) afterwards. */
async function startSignIn(login, back) {
  if (!crypto.subtle) {
    showLogin("Signing in with the identity provider needs this page to be served over HTTPS.");
    return;
  }
  // RFC 7636 4.1: 32 random octets give a 43-character verifier.
  const pending = { state: randomString(16), verifier: randomString(32), back };
  sessionStorage.setItem(PENDING_KEY, JSON.stringify(pending));
  const url = new URL(login.authorization_endpoint);
  const query = {
    response_type: "code",
    client_id: login.client_id,
    redirect_uri: redirectUri(),
    scope: login.scope,
    state: pending.state,
    code_challenge: await challengeOf(pending.verifier),
    code_challenge_method: "S256",
  };
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  location.assign(url.href);
}

class SignInRefused extends Error {}

/** The provider's answer in this page's address, if any: the code exchanged for a token. */
async function finishSignIn(login) {
  const answer = new URLSearchParams(location.search);
  if (!answer.has("code") && !answer.has("error") && !answer.has("state")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  sessionStorage.removeItem(PENDING_KEY); // one answer per sign-in, never twice
  // The code must not stay in the address bar, the history or a bookmark.
  history.replaceState(null, "", location.pathname + location.hash);
  if (!pending || answer.get("state") !== pending.state) {
    throw new SignInRefused(
      "Sign-in refused: the answer from the identity provider does not belong to a sign-in " +
        "started in this tab (its state does not match). Please sign in again.",
    );
  }
  if (answer.has("error")) {
    const detail = answer.get("error_description") || answer.get("error");
    throw new SignInRefused(`The identity provider did not sign you in: ${detail}`);
  }
  if (!login || login.error) throw new SignInRefused(login ? login.error : "OpenID Connect sign-in is not configured here.");
  let response;
  try {
    response = await fetch(login.token_endpoint, {
      method: "POST",
      headers: { Accept: "application/json" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code: answer.get("code") || "",
        redirect_uri: redirectUri(),
        client_id: login.client_id,
        code_verifier: pending.verifier,
      }),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new SignInRefused(`The identity provider's token endpoint could not be reached (${error.message}).`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok || !data || typeof data.access_token !== "string") {
    const detail = (data && (data.error_description || data.error)) || `HTTP ${response.status}`;
    throw new SignInRefused(`The identity provider did not give an access token: ${detail}`);
  }
  setToken(data.access_token);
  return pending.back;
}

/** The "Sign in with <provider>" button above the token form (or why there is none). */
function offerProvider(login, back) {
  if (!login || $("oidc-login")) return;
  const box = document.createElement("div");
  box.id = "oidc-login";
  if (login.error) {
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = login.error;
    box.append(note);
  } else {
    const button = document.createElement("button");
    button.type = "button";
    button.id = "oidc-sign-in";
    button.textContent = `Sign in with ${login.name}`;
    button.onclick = () => startSignIn(login, back).catch((error) => showLogin(error.message));
    const or = document.createElement("p");
    or.textContent = "Or paste an access token:";
    box.append(button, or);
  }
  $("login-form").before(box);
}

/**
 * Set up sign-in on this page. Returns true when the page may open now (a token is here, or
 * the server needs none); otherwise the login is shown and `onSignedIn` runs after a sign-in.
 */
export async function signIn(config, onSignedIn) {
  const login = config.oidc_login || null;
  const back = location.pathname + location.hash;
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token").value.trim());
    $("token").value = "";
    onSignedIn();
  });
  offerProvider(login, back);
  try {
    const returnTo = await finishSignIn(login);
    if (returnTo) {
      const here = location.pathname + location.hash;
      const target = new URL(returnTo, location.origin);
      // Only back to this dashboard, never to another origin or page outside /ui/.
      if (returnTo !== here && target.origin === location.origin && target.pathname.startsWith("/ui/")) {
        if (target.pathname === location.pathname) history.replaceState(null, "", returnTo);
        else {
          location.replace(target.href);
          return false;
        }
      }
    }
  } catch (error) {
    if (!(error instanceof SignInRefused)) throw error;
    showLogin(error.message);
    return false;
  }
  if (config.auth && !token()) {
    showLogin();
    return false;
  }
  return true;
}
