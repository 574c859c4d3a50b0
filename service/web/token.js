// The service's bearer token: asked of the user in the page's dialog (#token-dialog) when the service
// asks for one, and kept in sessionStorage (this tab, until it is closed), never in localStorage.

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

export function initTokenDialog() {
  const dialog = document.getElementById("token-dialog");
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
