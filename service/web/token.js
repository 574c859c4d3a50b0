// The service's bearer token: asked of the user in a dialog (#token-dialog, which initTokenDialog adds to the
// page) when the service answers 401 with "WWW-Authenticate: Bearer", and kept in sessionStorage (this tab,
// until it is closed), never in localStorage. Every page that calls the service uses this one dialog.

const KEY = "thermo-digits.token";
let kept = stored();
let asking = null; // the open dialog's promise: calls refused meanwhile wait for the same answer

function stored() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null; // storage blocked: the token lasts as long as this page
  }
}

// The token to send, or null.
export function currentToken() {
  return kept;
}

// Opens the dialog with the service's `refusal` shown; resolves true once the user gave a token
// (currentToken() returns it), false if they cancelled.
export function askForToken(refusal) {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-refusal").textContent = refusal;
  if (asking) return asking;
  asking = new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      asking = null;
      resolve(dialog.returnValue === "token");
    }, { once: true });
    dialog.showModal();
  });
  return asking;
}

const DIALOG = String.raw`
  <form id="token-form">
    <h2 id="token-heading">Access token needed</h2>
    <p id="token-refusal" class="error"></p>
    <p id="token-help" class="help">This service answers only requests that carry an access token. The page
      keeps the token for this tab only, until you close it, and sends it with each request.</p>
    <label for="token">Access token</label>
    <input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required autofocus
           pattern="[A-Za-z0-9\-._~+\/]+=*" title="Letters, digits and - . _ ~ + / (then = signs, if any)">
    <div class="buttons">
      <button type="submit">Use this token</button>
      <button type="button" id="token-cancel" class="secondary">Cancel</button>
    </div>
  </form>`;

// Adds the dialog to the page and wires it; call once, when the page starts.
export function initTokenDialog() {
  const dialog = document.createElement("dialog");
  dialog.id = "token-dialog";
  dialog.setAttribute("aria-labelledby", "token-heading");
  dialog.setAttribute("aria-describedby", "token-refusal token-help");
  dialog.innerHTML = DIALOG;
  document.body.append(dialog);
  const input = document.getElementById("token");
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    kept = input.value.trim();
    try {
      sessionStorage.setItem(KEY, kept);
    } catch {
      // storage blocked: kept for this page only
    }
    input.value = "";
    dialog.close("token");
  });
  document.getElementById("token-cancel").addEventListener("click", () => dialog.close("cancel"));
}
