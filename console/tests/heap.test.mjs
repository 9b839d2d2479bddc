// Left open at a high frame rate, the page does not grow: its JS heap (CDP
// Performance.getMetrics, after a forced GC) and its DOM stay flat over 60 s.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { RESULTS, launchBrowser, number, sleep, startLoad, startSidecar, tempDir, text, until } from "./harness.mjs";

const RATE = Number(process.env.HEAP_TEST_RATE ?? 100_000);
const RUN_S = Number(process.env.HEAP_TEST_SECONDS ?? 60);
const WARMUP_S = 10;
const SAMPLE_S = 5;
const MiB = 1024 * 1024;
let dir, sidecar, load, browser, page, cdp;

before(async () => {
  dir = tempDir("heap");
  sidecar = await startSidecar({ dir, args: ["--ring-size", "64MiB"] });
  load = startLoad({ dir, rate: RATE, topics: 8, size: 64, duration: `${WARMUP_S + RUN_S + 30}s` });
  browser = await launchBrowser();
  page = await browser.newPage();
  cdp = await browser.context.newCDPSession(page);
  await cdp.send("Performance.enable");
  await page.goto(sidecar.url);
});

after(async () => {
  await browser?.close();
  await load?.kill();
  await sidecar?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function sample(t) {
  await cdp.send("HeapProfiler.collectGarbage");
  const { metrics } = await cdp.send("Performance.getMetrics");
  const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
  return {
    t,
    heapUsed: m.JSHeapUsedSize,
    heapTotal: m.JSHeapTotalSize,
    nodes: m.Nodes,
    listeners: m.JSEventListeners,
    framesReceived: await number(page, "tail-frames"),
    lapped: Number(await text(page, "tail-lost-lapped")),
    linesDropped: await number(page, "tail-dropped"),
  };
}

test(`JS heap and DOM stay bounded over ${RUN_S} s at ${RATE} frames/s`, { timeout: (WARMUP_S + RUN_S + 60) * 1000 }, async () => {
  await until(page, () => document.getElementById("tail-state").textContent === "live");
  await sleep(WARMUP_S * 1000);
  const t0 = Date.now();
  const samples = [await sample(0)];
  for (let k = 1; k * SAMPLE_S <= RUN_S; k++) {
    await sleep(t0 + k * SAMPLE_S * 1000 - Date.now());
    samples.push(await sample(Math.round((Date.now() - t0) / 100) / 10));
  }
  const ingest = await text(page, "ingest-fps");
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, "heap.json"), `${JSON.stringify({ rate: RATE, ingest, samples }, null, 2)}\n`);
  const first = samples[0];
  const last = samples.at(-1);
  const mib = (b) => (b / MiB).toFixed(2);
  console.log(
    `heap: ${samples.map((s) => `${s.t}s ${mib(s.heapUsed)} MiB`).join(", ")}; ingest ${ingest} frames/s; ` +
      `page got ${last.framesReceived - first.framesReceived} frames and was told of ${last.lapped - first.lapped} lapped in ${last.t} s; ` +
      `DOM nodes ${samples.map((s) => s.nodes).join(" ")}`,
  );

  // The page really was under load: frames it received plus frames it was told it lost.
  const covered = last.framesReceived - first.framesReceived + (last.lapped - first.lapped);
  assert.ok(covered > RATE * last.t * 0.5, `the page accounted for ${covered} frames in ${last.t} s at ${RATE}/s`);

  // Bounded: after the warm-up the live heap does not grow. Medians, since a
  // sample may catch a batch or two in flight; a leak of even one small object
  // per batch (thousands of batches/s here) adds megabytes over the run: a
  // sabotaged bundle keeping one short string per batch grew 3.7 → 11 MiB in 30 s.
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const early = median(samples.filter((s) => s.t < RUN_S / 2).map((s) => s.heapUsed));
  const late = median(samples.filter((s) => s.t >= RUN_S / 2).map((s) => s.heapUsed));
  const max = Math.max(...samples.map((s) => s.heapUsed));
  assert.ok(late <= early + 2 * MiB, `heap median grew from ${mib(early)} MiB to ${mib(late)} MiB`);
  assert.ok(max < 32 * MiB, `heap reached ${mib(max)} MiB`);
  // ... and neither does the DOM: a fixed pool of rows (the count moves by a
  // few hundred with Blink's own collection, nowhere near one node per batch).
  const maxNodes = Math.max(...samples.map((s) => s.nodes));
  assert.ok(maxNodes < 4000, `DOM nodes reached ${maxNodes}`);
  assert.deepEqual(browser.pageErrors, []);
});
