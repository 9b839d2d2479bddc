/**
 * What the header pill and the error banner say: the last error of each kind
 * of call (Info, ListTopics, Subscribe), cleared when that call works again.
 * A missing or wrong token opens the token form.
 */
import { Code, ConnectError, describe } from "./api.js";
import { byId, setText } from "./dom.js";

export type Source = "Info" | "ListTopics" | "Subscribe";

/** Codes that mean the sidecar answered and refused the request (not that it is unreachable). */
const ANSWERED = new Set<Code>([
  Code.InvalidArgument,
  Code.ResourceExhausted,
  Code.PermissionDenied,
  Code.FailedPrecondition,
  Code.OutOfRange,
  Code.Unimplemented,
]);

/** Chromium's and Firefox's words for a request that never reached a server. */
const UNREACHABLE = /failed to fetch|network ?error|load failed/i;

interface Failure {
  text: string;
  auth: boolean;
  answered: boolean;
}

export class Health {
  private readonly errors = new Map<Source, Failure>();
  private readonly pill = byId("conn");
  private readonly banner = byId("error");
  private readonly authForm = byId("auth");
  private readonly authWhy = byId("auth-why");

  ok(source: Source): void {
    if (this.errors.delete(source)) this.show();
    else if (this.pill.textContent !== "live") this.show();
  }

  fail(source: Source, err: unknown): void {
    const e = ConnectError.from(err);
    const hint = UNREACHABLE.test(e.rawMessage) ? " (the sidecar cannot be reached; retrying)" : "";
    this.errors.set(source, {
      text: `${source}: ${describe(e)}${hint}`,
      auth: e.code === Code.Unauthenticated,
      answered: ANSWERED.has(e.code),
    });
    this.show();
  }

  /** Forgets the last error of `source` (a new request replaces the failed one). */
  clear(source: Source): void {
    if (this.errors.delete(source)) this.show();
  }

  /** True while some call is refused for want of a valid token. */
  needsToken(): boolean {
    for (const e of this.errors.values()) if (e.auth) return true;
    return false;
  }

  private show(): void {
    const list = [...this.errors.values()];
    const auth = list.some((e) => e.auth);
    if (list.length === 0) {
      setText(this.pill, "live");
      this.pill.className = "pill pill-ok";
    } else if (auth) {
      setText(this.pill, "token required");
      this.pill.className = "pill pill-wait";
    } else if (list.every((e) => e.answered)) {
      setText(this.pill, "request refused");
      this.pill.className = "pill pill-bad";
    } else {
      setText(this.pill, "disconnected");
      this.pill.className = "pill pill-bad";
    }
    this.banner.hidden = list.length === 0;
    setText(this.banner, list.map((e) => e.text).join("\n"));
    if (auth) {
      const first = list.find((e) => e.auth);
      setText(
        this.authWhy,
        `This sidecar requires a bearer token (--auth-token-file). ${first?.text ?? ""}`,
      );
    }
    this.authForm.hidden = !auth;
  }
}
