/**
 * What the header pill and the error banner say: the last error of each kind
 * of call (Info, ListTopics, Subscribe), cleared when that call works again.
 * A missing or wrong token opens the token form.
 */
import { Code, ConnectError, describe } from "./api.js";
import { byId, setText } from "./dom.js";

export type Source = "Info" | "ListTopics" | "Subscribe";

export class Health {
  private readonly errors = new Map<Source, { text: string; auth: boolean }>();
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
    this.errors.set(source, { text: `${source}: ${describe(e)}`, auth: e.code === Code.Unauthenticated });
    this.show();
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
