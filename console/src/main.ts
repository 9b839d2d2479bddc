/**
 * The ringside console: wires the page's forms to the dashboard (Info,
 * ListTopics) and the live tail (Subscribe), all over grpc-web on the
 * origin that served the page.
 */
import { Api, MAX_TOKEN_LENGTH } from "./api.js";
import { Chart } from "./chart.js";
import { Dashboard } from "./dashboard.js";
import { byId } from "./dom.js";
import { Health } from "./health.js";
import { Tail, type From, type TailOptions } from "./tail.js";

/** Most names the sidecar accepts per filter list (see the proto). */
const MAX_FILTERS = 64;

function main(): void {
  const api = new Api(window.location.origin);
  const health = new Health();
  const tail = new Tail(api, health);

  const filter = byId<HTMLInputElement>("tail-filter");
  const match = byId<HTMLSelectElement>("tail-match");
  const from = byId<HTMLSelectElement>("tail-from");
  const seq = byId<HTMLInputElement>("tail-seq");

  const readOptions = (): TailOptions | string => {
    const names = filter.value
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    if (names.length > MAX_FILTERS) return `at most ${MAX_FILTERS} topics or prefixes (got ${names.length})`;
    let start: From;
    if (from.value === "sequence") {
      const v = seq.value.trim();
      if (!/^\d+$/.test(v)) return `"${v}" is not a sequence number; write a whole number such as 0`;
      start = { kind: "sequence", seq: BigInt(v) };
    } else {
      start = { kind: from.value === "earliest" ? "earliest" : "latest" };
    }
    return match.value === "prefix"
      ? { topics: [], prefixes: names, from: start }
      : { topics: names, prefixes: [], from: start };
  };

  const startTail = () => {
    const o = readOptions();
    if (typeof o === "string") {
      window.alert(o);
      return;
    }
    tail.start(o);
  };

  from.addEventListener("change", () => {
    seq.disabled = from.value !== "sequence";
    if (!seq.disabled) seq.focus();
  });
  byId<HTMLFormElement>("tail-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    startTail();
  });
  byId("tail-pause").addEventListener("click", () => {
    if (tail.isPaused()) tail.resume();
    else tail.pause();
  });

  const chart = new Chart();
  const dashboard = new Dashboard(api, health, chart, (topic) => {
    filter.value = topic;
    match.value = "exact";
    from.value = "latest";
    seq.disabled = true;
    startTail();
  });

  const token = byId<HTMLInputElement>("auth-token");
  token.maxLength = MAX_TOKEN_LENGTH;
  byId<HTMLFormElement>("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    api.setToken(token.value);
    token.value = "";
    dashboard.start();
    tail.retry();
  });
  byId("auth-forget").addEventListener("click", () => {
    api.setToken(null);
    dashboard.start();
    tail.retry();
  });

  dashboard.start();
  startTail();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
else main();
