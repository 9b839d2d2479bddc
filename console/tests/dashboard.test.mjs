// The dashboard and the tail against a real sidecar and a real producer:
// topics with plausible rates, exact and prefix filters, pause and resume.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { rmSync } from "node:fs";
import {
  clickAndWaitForNewTail,
  launchBrowser,
  number,
  screenshot,
  sleep,
  startLoad,
  startSidecar,
  startTail,
  tailLines,
  tempDir,
  text,
  until,
} from "./harness.mjs";

const RATE = 4000;
const TOPICS = 4;
let dir, sidecar, load, browser, page;

before(async () => {
  dir = tempDir("dashboard");
  sidecar = await startSidecar({ dir, args: ["--ring-size", "16MiB"] });
  load = startLoad({ dir, rate: RATE, topics: TOPICS, size: 100, duration: "120s" });
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

test("the topics written appear with plausible rates", async () => {
  // Two ListTopics polls are needed for a rate; wait until every topic has one.
  await until(
    page,
    (n) => {
      const rows = [...document.querySelectorAll("#topics-rows tr")];
      return rows.length === n && rows.every((r) => r.cells[2].textContent !== "…");
    },
    TOPICS,
  );
  await sleep(4000); // a few seconds of steady rates
  const rows = await page.$$eval("#topics-rows tr", (trs) =>
    trs.map((tr) => ({ name: tr.cells[0].textContent, frames: tr.cells[1].textContent, fps: tr.cells[2].textContent })),
  );
  assert.deepEqual(
    rows.map((r) => r.name),
    Array.from({ length: TOPICS }, (_, i) => `load/${i}`),
  );
  const perTopic = RATE / TOPICS;
  for (const r of rows) {
    const fps = Number(r.fps.replace(/k$/, "")) * (r.fps.endsWith("k") ? 1000 : 1);
    assert.ok(fps > perTopic * 0.5 && fps < perTopic * 1.5, `${r.name}: ${r.fps} frames/s, expected about ${perTopic}`);
    assert.ok(Number(r.frames.replace(/,/g, "")) > 0, `${r.name} has frames`);
  }
  const ingest = await text(page, "ingest-fps");
  const ingestFps = Number(ingest.replace(/k$/, "")) * (ingest.endsWith("k") ? 1000 : 1);
  assert.ok(ingestFps > RATE * 0.5 && ingestFps < RATE * 1.5, `ingest ${ingest} frames/s, expected about ${RATE}`);
  assert.equal(await text(page, "prod-connected"), "1");
  assert.equal(await text(page, "ring-capacity"), "16.0 MiB");
  assert.match(await text(page, "mem-rss"), /MiB|KiB/, "RssAnon is shown");
  assert.match(await text(page, "mem-budget"), /MiB|GiB/);
  // This page's own tail is a subscriber, listed with its lag.
  assert.ok((await page.locator("#subs-rows tr").count()) >= 1, "a subscriber row");
  assert.equal(await text(page, "conn"), "live");
  assert.deepEqual(browser.pageErrors, []);
});

test("the tail shows frames of the filtered topic only (exact and prefix)", async () => {
  await startTail(page, { filter: "load/2", match: "exact", from: "latest" });
  await until(page, () => document.querySelectorAll('#tail-lines > div[data-kind="frame"]:not([hidden])').length >= 50);
  let lines = (await tailLines(page)).filter((l) => l.kind === "frame");
  assert.ok(lines.length >= 50);
  assert.deepEqual([...new Set(lines.map((l) => l.topic))], ["load/2"]);

  await startTail(page, { filter: "load/1, load/3", match: "exact", from: "earliest" });
  await until(page, () => document.querySelectorAll('#tail-lines > div[data-kind="frame"]:not([hidden])').length >= 100);
  lines = (await tailLines(page)).filter((l) => l.kind === "frame");
  assert.deepEqual([...new Set(lines.map((l) => l.topic))].sort(), ["load/1", "load/3"]);

  await startTail(page, { filter: "load/", match: "prefix", from: "latest" });
  await until(page, () => document.querySelectorAll('#tail-lines > div[data-kind="frame"]:not([hidden])').length >= 100);
  lines = (await tailLines(page)).filter((l) => l.kind === "frame");
  assert.equal(new Set(lines.map((l) => l.topic)).size, TOPICS);

  // The topic table's "tail" button tails that topic alone.
  await clickAndWaitForNewTail(page, '#topics-rows button[data-topic="load/3"]');
  assert.equal(await page.inputValue("#tail-filter"), "load/3");
  await until(page, () => document.querySelectorAll('#tail-lines > div[data-kind="frame"]:not([hidden])').length >= 50);
  lines = (await tailLines(page)).filter((l) => l.kind === "frame");
  assert.deepEqual([...new Set(lines.map((l) => l.topic))], ["load/3"]);

  await startTail(page, { filter: "other/", match: "prefix", from: "earliest" });
  await sleep(2000);
  lines = (await tailLines(page)).filter((l) => l.kind === "frame");
  assert.equal(lines.length, 0, "no frame matches the prefix other/");
  assert.equal(await text(page, "tail-state"), "live");
});

test("pausing stops the tail and resuming continues where it stopped", async () => {
  await startTail(page, { from: "latest" });
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 500);
  await page.click("#tail-pause");
  await until(page, () => document.getElementById("tail-state").textContent === "paused");
  const resumeAt = await text(page, "tail-resume");
  const frames = await number(page, "tail-frames");
  const last = (await tailLines(page)).at(-1).text;
  await sleep(2000);
  assert.equal(await number(page, "tail-frames"), frames, "no frames arrive while paused");
  assert.equal((await tailLines(page)).at(-1).text, last, "the lines do not move while paused");
  assert.equal(await text(page, "tail-pause"), "Resume");

  await page.click("#tail-pause");
  await until(page, (n) => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > n + 1000, frames);
  // Paused 2 s at 4000 frames/s: the stream resumed from its resume_seq, so
  // exactly the frames written since arrive, none lost and none twice.
  await page.click("#tail-pause");
  await until(page, () => document.getElementById("tail-state").textContent === "paused");
  const resumeAt2 = await text(page, "tail-resume");
  const frames2 = await number(page, "tail-frames");
  assert.equal(BigInt(frames2 - frames), BigInt(resumeAt2) - BigInt(resumeAt), "frames received = sequence advance");
  assert.equal(await text(page, "tail-lost-lapped"), "0");
  const events = await page.$$eval("#tail-events > div:not([hidden])", (ds) => ds.map((d) => d.textContent));
  assert.ok(events.some((e) => e.includes(`resumed at seq ${Number(resumeAt).toLocaleString("en-US")}`)), events.join("\n"));
  await page.click("#tail-pause");
  await screenshot(page, "dashboard.png");
  assert.deepEqual(browser.pageErrors, []);
});

test("the tail starts at a given sequence, and a sequence not yet written is refused clearly", async () => {
  const next = await number(page, "ring-next-seq");
  const from = Math.max(0, next - 5000);
  await startTail(page, { from: "sequence", seq: from });
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 6000);
  await page.click("#tail-pause");
  await until(page, () => document.getElementById("tail-state").textContent === "paused");
  // Every frame from `from` up to the resume point arrived, none before it.
  const received = await number(page, "tail-frames");
  assert.equal(BigInt(received), BigInt(await text(page, "tail-resume")) - BigInt(from));

  await startTail(page, { from: "sequence", seq: "99999999999" });
  await until(page, () => document.getElementById("tail-state").textContent === "error");
  assert.match(await text(page, "error"), /Subscribe: INVALID_ARGUMENT: sequence 99999999999 has not been written yet/);
  assert.equal(await text(page, "conn"), "request refused");
  // A good request clears it.
  await startTail(page, { from: "latest" });
  await until(page, () => document.getElementById("conn").textContent === "live");
  assert.equal(await page.isVisible("#error"), false);
  assert.deepEqual(browser.pageErrors, []);
});
