// The README's picture: `ringside serve --demo` plus `ringside load`, the tail
// on the demo topics. Saved to test-results/console.png; with RINGSIDE_BLESS=1
// also to docs/console.png (commit it).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { rmSync } from "node:fs";
import { launchBrowser, screenshot, sleep, startLoad, startSidecar, startTail, tempDir, until } from "./harness.mjs";

let dir, sidecar, load, browser, page;

before(async () => {
  dir = tempDir("screenshot");
  sidecar = await startSidecar({ dir, args: ["--demo", "--demo-rate", "3000", "--ring-size", "32MiB"] });
  load = startLoad({ dir, rate: 20_000, topics: 3, size: 200, duration: "120s" });
  browser = await launchBrowser();
  page = await browser.newPage();
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(sidecar.url);
});

after(async () => {
  await browser?.close();
  await load?.kill();
  await sidecar?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a screenshot of the console under load", async () => {
  await until(page, () => document.querySelectorAll("#topics-rows tr").length === 6);
  await startTail(page, { filter: "demo/", match: "prefix", from: "latest" });
  await sleep(20_000);
  const path = await screenshot(page, "console.png", "docs/console.png");
  assert.ok(path.endsWith("console.png"));
  assert.deepEqual(browser.pageErrors, []);
});
