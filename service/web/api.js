// Calls to the service. Every answer is JSON; an error answer is {"error": "<one readable sentence>"},
// and that sentence is what the page shows: the page checks nothing the server checks.

export class ApiError extends Error {}

export async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new ApiError(`The service could not be reached (${e.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: handled below
  }
  if (!response.ok) {
    const said = body && typeof body.error === "string" ? body.error : `The service answered HTTP ${response.status}.`;
    throw new ApiError(said);
  }
  if (body === null) throw new ApiError("The service's answer was not JSON.");
  return body;
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
