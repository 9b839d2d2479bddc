// Losses as the page shows them: a burst that laps the page, and a paused
// page that resumes after the ring overwrote its position; the loss records
// it shows equal what a gRPC subscriber (`ringside tail`) is told.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { rmSync } from "node:fs";
import {
  launchBrowser,
  number,
  run,
  startLoad,
  startSidecar,
  startTail,
  tempDir,
  text,
  until,
} from "./harness.mjs";

let dir, sidecar, browser, page;

before(async () => {
  dir = tempDir("losses");
  // A 1 MiB ring: a burst of 200k frames of 200 B laps it about 45 times.
  sidecar = await startSidecar({ dir, args: ["--ring-size", "1MiB"] });
  browser = await launchBrowser();
  page = await browser.newPage();
  await page.goto(sidecar.url);
  await until(page, () => document.getElementById("conn").textContent === "live");
});

after(async () => {
  await browser?.close();
  await sidecar?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function nextSeq() {
  const r = run(["stats", "--json", "--endpoint", sidecar.url.replace(/\/$/, "")]);
  assert.equal(r.status, 0, r.stderr);
  return BigInt(JSON.parse(r.stdout).next_seq);
}

async function burst(count) {
  const load = startLoad({ dir, rate: 0, topics: 3, size: 200, count, duration: "60s" });
  const exit = await load.exited;
  assert.equal(exit.code, 0, `ringside load failed: ${load.log}`);
}

test("a lapping burst: every frame the page did not get is a loss record", async () => {
  await startTail(page, { from: "earliest" });
  await until(page, () => document.getElementById("tail-state").textContent === "live");
  await burst(200_000);
  const end = nextSeq();
  assert.ok(end >= 200_000n, `the ring holds ${end} frames`);
  await until(page, (e) => document.getElementById("tail-resume").textContent === e, end.toString(), 30_000);
  const received = BigInt(await number(page, "tail-frames"));
  const lost =
    BigInt(await text(page, "tail-lost-lapped")) +
    BigInt(await text(page, "tail-lost-abandoned")) +
    BigInt(await text(page, "tail-lost-corrupt"));
  assert.ok(lost > 0n, "the burst lapped the page (else this test shows nothing)");
  assert.equal(received + lost, end, `received ${received} + lost ${lost} = every sequence 0..${end}`);
  const losses = await page.$$eval('#tail-events > div[data-kind="loss"]', (ds) => ds.map((d) => d.dataset.reason));
  assert.ok(losses.length > 0 && losses.every((r) => r === "LAPPED"), `loss lines: ${losses}`);
});

test("a paused page resumes with the same loss record a gRPC subscriber is told", async () => {
  await until(page, () => Number(document.getElementById("tail-frames").textContent.replace(/,/g, "")) > 0);
  await page.click("#tail-pause");
  await until(page, () => document.getElementById("tail-state").textContent === "paused");
  const from = await text(page, "tail-resume");
  const lappedBefore = BigInt(await text(page, "tail-lost-lapped"));
  await burst(100_000);

  // What `ringside tail` (tonic over HTTP/2) is told when it resumes from the same sequence.
  const r = run([
    "tail",
    "--endpoint",
    sidecar.url.replace(/\/$/, ""),
    "--from",
    from,
    "--json",
    "--count",
    "1",
    "--idle-exit",
    "3s",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const told = r.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((l) => l.loss)
    .map((l) => l.loss);
  assert.equal(told.length, 1, `ringside tail was told: ${r.stdout}`);
  assert.equal(told[0].reason, "lapped");
  assert.equal(String(told[0].first_seq), from);

  await page.click("#tail-pause"); // resume
  await until(page, (n) => BigInt(document.getElementById("tail-lost-lapped").textContent) > BigInt(n), lappedBefore.toString());
  const shown = await page.$$eval('#tail-events > div[data-kind="loss"]', (ds) =>
    ds.map((d) => ({ reason: d.dataset.reason, frames: d.dataset.frames, firstSeq: d.dataset.firstSeq, text: d.textContent })),
  );
  const last = shown.at(-1);
  assert.deepEqual(
    { reason: last.reason, frames: last.frames, firstSeq: last.firstSeq },
    { reason: "LAPPED", frames: String(told[0].frames), firstSeq: from },
    last.text,
  );
  assert.equal(BigInt(await text(page, "tail-lost-lapped")) - lappedBefore, BigInt(told[0].frames));
  // The same record is also inline in the tail, unless frames since pushed it out.
  assert.match(last.text, /LOST [\d,]+ frames, seq \d+\.\.\d+: LAPPED/);
  assert.deepEqual(browser.pageErrors, []);
});
