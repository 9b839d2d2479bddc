// A sidecar restart under load: the page's stream ends, it resumes from the
// last resume_seq with backoff, shows the gap, and loses nothing the ring kept.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { rmSync } from "node:fs";
import { launchBrowser, number, screenshot, sleep, startLoad, startSidecar, tempDir, text, until } from "./harness.mjs";

let dir, sidecar, load, browser, page;

before(async () => {
  dir = tempDir("restart");
  sidecar = await startSidecar({ dir, args: ["--ring-size", "16MiB"] });
  load = startLoad({ dir, rate: 2000, topics: 2, size: 100, duration: "120s" });
  browser = await launchBrowser();
  page = await browser.newPage();
  await page.goto(sidecar.url);
});

after(async () => {
  await browser?.close();
  await load?.kill();
  await sidecar?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function restart(signal) {
  await until(page, () => document.getElementById("tail-state").textContent === "live");
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 1000);
  const reconnects = await number(page, "tail-reconnects");
  const port = sidecar.port;
  await sidecar.kill(signal);
  await until(page, () => document.getElementById("tail-state").textContent === "reconnecting", undefined, 15_000);
  const downAt = await text(page, "tail-resume");
  await sleep(1500); // the producer keeps writing while no sidecar runs
  sidecar = await startSidecar({ dir, port, args: ["--ring-size", "16MiB"] });
  await sidecar.waitFor(/adopted=true/);
  try {
    await until(page, () => [...document.querySelectorAll("#tail-events > div:not([hidden])")].at(-1)?.textContent.includes("gap:"), undefined, 20_000);
  } catch (e) {
    await screenshot(page, `restart-${signal}-failed.png`);
    throw e;
  }
  const gap = (await page.$$eval("#tail-events > div:not([hidden])", (ds) => ds.map((d) => d.textContent))).at(-1);
  assert.match(gap, new RegExp(`gap: the stream was down [\\d.]+ s .*resumed at seq ${Number(downAt).toLocaleString("en-US")}; no frames lost across it`), gap);
  assert.ok((await number(page, "tail-reconnects")) > reconnects, "counted a reconnect");
  // Frames keep coming, from the same ring, with nothing lost.
  const before = await number(page, "tail-frames");
  await until(page, (n) => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > n + 1000, before);
  assert.equal(await text(page, "tail-lost-lapped"), "0");
  assert.equal(await text(page, "tail-state"), "live");
  const events = await page.$$eval("#tail-events > div:not([hidden])", (ds) => ds.map((d) => d.textContent));
  assert.ok(!events.some((e) => e.includes("ring replaced")), events.join("\n"));
  await until(page, () => document.getElementById("conn").textContent === "live", undefined, 10_000);
  return gap;
}

test("a sidecar restart (SIGTERM) is survived, with the gap shown", async () => {
  const gap = await restart("SIGTERM");
  assert.match(gap, /UNAVAILABLE/, "a graceful shutdown ends the stream with UNAVAILABLE");
});

test("a sidecar crash (SIGKILL) is survived, with the gap shown", async () => {
  await restart("SIGKILL");
  assert.deepEqual(browser.pageErrors, []);
});
