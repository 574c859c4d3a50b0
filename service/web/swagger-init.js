// Swagger UI for /docs (service/web/docs.html): BentoML's swagger-initializer.js, changed so that the
// page requests nothing from another origin:
// * validatorUrl null: Swagger UI's default shows a badge loaded from validator.swagger.io (sending
//   it this service's spec URL) on every host but localhost;
// * images from other origins in the spec's Markdown become their alt text: BentoML's default
//   description carries five badges (img.shields.io, readthedocs.org, badgen.net);
// * the bearer token the web page keeps for this tab (sessionStorage), when the service needs one, is sent
//   with the spec's request and every "Try it out" request.

const REMOTE_MARKDOWN_IMAGE = /!\[([^\]]*)\]\(\s*<?(?:[a-z][a-z0-9+.-]*:)?\/\/[^)]*\)/gi;
const REMOTE_HTML_IMAGE = /<img\b[^>]*\bsrc\s*=\s*["']?(?:[a-z][a-z0-9+.-]*:)?\/\/[^>]*>/gi;

function withoutRemoteImages(node) {
  if (Array.isArray(node)) return node.map(withoutRemoteImages);
  if (node === null || typeof node !== "object") return node;
  return Object.fromEntries(Object.entries(node).map(([key, value]) => [key,
    key === "description" && typeof value === "string"
      ? value.replace(REMOTE_MARKDOWN_IMAGE, "$1").replace(REMOTE_HTML_IMAGE, "")
      : withoutRemoteImages(value)]));
}

const TOKEN_KEY = "thermo-digits.token"; // service/web/token.js

function withToken(headers) {
  let token = null;
  try {
    token = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    // storage blocked: no token
  }
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

window.onload = async function () {
  const response = await fetch("/docs.json", { headers: withToken({}) });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    document.getElementById("swagger-ui").textContent =
      `${answer.error || response.statusText} (open / in this tab and give the token there first)`;
    return;
  }
  window.ui = SwaggerUIBundle({
    spec: withoutRemoteImages(await response.json()),
    requestInterceptor: (request) => {
      withToken(request.headers);
      return request;
    },
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
    validatorUrl: null,
  });
};
