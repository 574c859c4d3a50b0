// The page's entry point (an ES module, deferred: the DOM is ready when it runs).
import { initDigitPanel } from "./digit.js";
import { initThermoPanel } from "./thermo.js";
import { initTokenDialog } from "./token.js";

initTokenDialog();
initDigitPanel();
initThermoPanel();
