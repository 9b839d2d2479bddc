// Bundled by cors.test.mjs (esbuild, at test time) into the page served from
// another origin: the generated client, subscribing to a sidecar elsewhere.
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Ringside } from "../gen/ringside/v1/ringside_pb.js";

window.subscribeOnce = async (baseUrl) => {
  const client = createClient(Ringside, createGrpcWebTransport({ baseUrl }));
  const ctrl = new AbortController();
  try {
    for await (const batch of client.subscribe(
      { start: { case: "earliest", value: true } },
      { signal: ctrl.signal, timeoutMs: 5000 },
    )) {
      if (batch.frames.length > 0) {
        ctrl.abort();
        return { ok: true, frames: batch.frames.length, topic: batch.frames[0].topic };
      }
    }
    return { ok: false, error: "the stream ended without frames" };
  } catch (e) {
    return { ok: false, error: String(e) };
  }
};
