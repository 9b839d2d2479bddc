// With --auth-token-file the page asks for the token: without it (or with a
// wrong one) it shows UNAUTHENTICATED; with it, it shows data.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { rmSync } from "node:fs";
import { launchBrowser, startLoad, startSidecar, tempDir, text, until, writeFile } from "./harness.mjs";

const TOKEN = "console-test-token-7f3a";
let dir, sidecar, load, browser, page;

before(async () => {
  dir = tempDir("auth");
  const tokenFile = writeFile(dir, "token", `${TOKEN}\n`);
  sidecar = await startSidecar({ dir, args: ["--ring-size", "4MiB", "--auth-token-file", tokenFile] });
  load = startLoad({ dir, rate: 1000, topics: 2, size: 64, duration: "120s" });
  browser = await launchBrowser();
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  await load?.kill();
  await sidecar?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the page is served without a token (only the API needs it)", async () => {
  const res = await page.goto(sidecar.url);
  assert.equal(res.status(), 200);
});

test("without a token the page shows UNAUTHENTICATED and asks for one", async () => {
  await until(page, () => !document.getElementById("auth").hidden);
  assert.equal(await text(page, "conn"), "token required");
  const error = await text(page, "error");
  assert.match(error, /Info: UNAUTHENTICATED: missing `authorization: Bearer <token>`/);
  assert.equal(await text(page, "version"), "–", "no data without a token");
  await until(page, () => document.getElementById("tail-state").textContent === "waiting for token");
});

test("a wrong token is refused, clearly", async () => {
  await page.fill("#auth-token", "not-the-token");
  await page.click("#auth button[type=submit]");
  await until(page, () => document.getElementById("error").textContent.includes("invalid bearer token"));
  assert.match(await text(page, "error"), /UNAUTHENTICATED: invalid bearer token/);
  assert.equal(await page.isVisible("#auth"), true);
});

test("with the token the page shows data, and keeps it for the tab", async () => {
  await page.fill("#auth-token", TOKEN);
  await page.click("#auth button[type=submit]");
  await until(page, () => document.getElementById("conn").textContent === "live");
  assert.equal(await page.isVisible("#auth"), false);
  assert.equal(await page.isVisible("#error"), false);
  await until(page, () => document.getElementById("version").textContent !== "–");
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 100);
  await until(page, () => document.querySelectorAll("#topics-rows tr").length === 2);

  await page.reload();
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 100);
  assert.equal(await text(page, "conn"), "live");

  // Another tab has its own sessionStorage: it asks again.
  const other = await browser.newPage();
  await other.goto(sidecar.url);
  await until(other, () => !document.getElementById("auth").hidden);
  await other.close();
  assert.deepEqual(browser.pageErrors, []);
});
