// Calls to the service, every one through call(). Every answer is JSON; an error answer is
// {"error": "<one readable sentence>"}, and that sentence is what the page shows: the page checks
// nothing the server checks. When the service asks for a bearer token (401 with
// "WWW-Authenticate: Bearer"), the user is asked for one (token.js), and the call is made again with
// it; every call carries the token as "Authorization: Bearer <token>" once there is one.

import { askForToken, currentToken } from "./token.js";

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status; // the HTTP status of a refusal; 0 when the service was not reached or not understood
  }
}

async function send(path, options, token) {
  try {
    const headers = new Headers(options.headers);
    if (token) headers.set("authorization", `Bearer ${token}`);
    return await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError(`The service could not be reached (${e.message}).`);
  }
}

function asksForBearerToken(response) {
  return response.status === 401 && /^\s*bearer\b/i.test(response.headers.get("www-authenticate") || "");
}

export async function call(path, options = {}) {
  for (;;) {
    const token = currentToken();
    const response = await send(path, options, token);
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: handled below
    }
    const said = body && typeof body.error === "string" ? body.error : `The service answered HTTP ${response.status}.`;
    if (asksForBearerToken(response)) {
      // A token given meanwhile (another call asked) is tried at once; else the user is asked.
      if (currentToken() === token && !(await askForToken(said))) throw new ApiError(said, response.status);
      continue;
    }
    if (!response.ok) throw new ApiError(said, response.status);
    if (body === null) throw new ApiError("The service's answer was not JSON.");
    return body;
  }
}

export function postJSON(path, data) {
  return call(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
  });
}

export function postImage(blob, filename, model) {
  const form = new FormData();
  form.append("image", blob, filename);
  form.append("model", model);
  return call("/digit/image", { method: "POST", body: form });
}
