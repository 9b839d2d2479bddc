/**
 * The sidecar's gRPC API over grpc-web (Connect-ES), on the origin the page
 * came from, with the bearer token (if one was given) on every call.
 */
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Ringside } from "../gen/ringside/v1/ringside_pb.js";

const TOKEN_KEY = "ringside.console.token";
/** Longest token accepted from the form (the sidecar's request limits are far below anything larger). */
export const MAX_TOKEN_LENGTH = 4096;

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: keep the token in memory only
  }
}

/** The gRPC client and the token it sends. */
export class Api {
  readonly client: Client<typeof Ringside>;
  private token: string | null;

  constructor(baseUrl: string) {
    this.token = storage()?.getItem(TOKEN_KEY) ?? null;
    const auth: Interceptor = (next) => async (req) => {
      if (this.token !== null) req.header.set("authorization", `Bearer ${this.token}`);
      return next(req);
    };
    const transport = createGrpcWebTransport({
      baseUrl,
      useBinaryFormat: true,
      interceptors: [auth],
    });
    this.client = createClient(Ringside, transport);
  }

  /** True when a token is set. */
  hasToken(): boolean {
    return this.token !== null;
  }

  /** Sets (or with `null`, forgets) the token; kept in this tab's sessionStorage. */
  setToken(token: string | null): void {
    const t = token?.trim() ?? "";
    this.token = t === "" ? null : t.slice(0, MAX_TOKEN_LENGTH);
    const s = storage();
    if (this.token === null) s?.removeItem(TOKEN_KEY);
    else s?.setItem(TOKEN_KEY, this.token);
  }
}

/** `ResourceExhausted` → `RESOURCE_EXHAUSTED`, as gRPC spells status codes. */
export function codeName(code: Code): string {
  const name = Code[code] ?? `CODE_${code}`;
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** An error as a person should read it: the gRPC code and the sidecar's message. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err);
  const msg = e.rawMessage.trim();
  return msg === "" ? codeName(e.code) : `${codeName(e.code)}: ${msg}`;
}

export { Code, ConnectError };
