// How the sidecar serves the console: types, a strict CSP and validators;
// `--console false`; and over TLS, https with the page streaming over HTTP/2.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { rmSync } from "node:fs";
import {
  launchBrowser,
  run,
  runProgram,
  startLoad,
  startSidecar,
  tempDir,
  text,
  until,
} from "./harness.mjs";

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function sidecarIn(prefix, args) {
  const dir = tempDir(prefix);
  const sidecar = await startSidecar({ dir, args: ["--ring-size", "4MiB", ...args] });
  cleanups.push(async () => {
    await sidecar.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, sidecar };
}

test("the console is served with its content type, a strict CSP and a validator", async () => {
  const { sidecar } = await sidecarIn("serving", []);
  const page = await fetch(sidecar.url);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = page.headers.get("content-security-policy");
  for (const directive of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(directive), `CSP has ${directive}: ${csp}`);
  }
  assert.equal(page.headers.get("x-content-type-options"), "nosniff");
  assert.equal(page.headers.get("cache-control"), "no-cache");
  const html = await page.text();
  assert.match(html, /<script src="console.js" defer><\/script>/);
  assert.doesNotMatch(html, /style=|<script>/, "no inline script or style (the CSP forbids them)");

  const again = await fetch(sidecar.url, { headers: { "if-none-match": page.headers.get("etag") } });
  assert.equal(again.status, 304);

  for (const [path, type] of [
    ["console.js", "text/javascript; charset=utf-8"],
    ["console.css", "text/css; charset=utf-8"],
    ["favicon.svg", "image/svg+xml"],
  ]) {
    const r = await fetch(`${sidecar.url}${path}`);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers.get("content-type"), type, path);
    assert.ok((await r.arrayBuffer()).byteLength > 0, path);
  }
  assert.equal((await fetch(`${sidecar.url}nope`)).status, 404);
  const head = await fetch(sidecar.url, { method: "HEAD" });
  assert.equal(head.status, 200);
  // gRPC keeps working on the same address.
  assert.equal(run(["stats", "--endpoint", sidecar.url.replace(/\/$/, "")]).status, 0);
});

test("--console false serves no page; the API still answers", async () => {
  const { sidecar } = await sidecarIn("noconsole", ["--console", "false"]);
  assert.doesNotMatch(sidecar.log, /live console/);
  const r = await fetch(sidecar.url);
  assert.notEqual(r.status, 200);
  assert.equal(r.headers.get("content-security-policy"), null);
  const stats = run(["stats", "--endpoint", sidecar.url.replace(/\/$/, "")]);
  assert.equal(stats.status, 0, stats.stderr);
});

test("with TLS the console is served over https and streams", async (t) => {
  const dir = tempDir("tls-certs");
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const cert = runProgram(
    "openssl",
    [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { cwd: dir },
  );
  if (cert.status !== 0) {
    t.skip(`the openssl command could not make a test certificate: ${cert.stderr}`);
    return;
  }
  const { dir: sdir, sidecar } = await sidecarIn("tls", [
    "--tls-cert", `${dir}/cert.pem`, "--tls-key", `${dir}/key.pem`,
  ]);
  assert.match(sidecar.url, /^https:/);
  const load = startLoad({ dir: sdir, rate: 1000, topics: 2, size: 32, duration: "60s" });
  cleanups.push(() => load.kill());
  const browser = await launchBrowser({ ignoreHTTPSErrors: true });
  cleanups.push(() => browser.close());
  const page = await browser.newPage();
  const res = await page.goto(sidecar.url);
  assert.equal(res.status(), 200);
  assert.equal(await res.headerValue("content-type"), "text/html; charset=utf-8");
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 200);
  await until(page, () => document.querySelectorAll("#topics-rows tr").length === 2);
  assert.equal(await text(page, "conn"), "live");
  const protocol = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  assert.equal(protocol, "h2", "over TLS the browser talks HTTP/2 (ALPN) to the sidecar");
  assert.deepEqual(browser.pageErrors, []);
});
