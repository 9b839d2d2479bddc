// Shared by the browser tests: a real `ringside serve`, a real `ringside load`,
// and Debian's Chromium driven by playwright-core. Every process is started
// here and SIGKILLed when its test ends; every buffer kept is bounded.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const CONSOLE_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = join(CONSOLE_DIR, "..");
/** Where tests leave screenshots and logs (ignored by git). */
export const RESULTS = join(CONSOLE_DIR, "test-results");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Bytes of each child's output kept for failure messages. */
const LOG_TAIL_BYTES = 64 * 1024;

const children = new Set();
process.on("exit", () => {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

let ringsideBin = null;

/**
 * The ringside binary: $RINGSIDE_BIN, else target/release/ringside built now
 * with cargo (a no-op when it is up to date). Release, because the heap test
 * needs a sidecar that serves 100k frames/s.
 */
export function ringside() {
  if (ringsideBin !== null) return ringsideBin;
  if (process.env.RINGSIDE_BIN) {
    ringsideBin = process.env.RINGSIDE_BIN;
  } else {
    const target = process.env.CARGO_TARGET_DIR ?? join(REPO, "target");
    const r = spawnSync("cargo", ["build", "--release", "--locked", "-p", "ringside"], {
      cwd: REPO,
      stdio: ["ignore", "inherit", "inherit"],
    });
    if (r.status !== 0) throw new Error(`cargo build --release -p ringside failed (exit ${r.status})`);
    ringsideBin = join(target, "release", "ringside");
  }
  if (!existsSync(ringsideBin)) throw new Error(`no ringside binary at ${ringsideBin}; set RINGSIDE_BIN`);
  return ringsideBin;
}

/** A fresh temporary directory, removed by `cleanup`. */
export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), `ringside-console-${prefix}-`));
}

/** A child process whose output tail is kept (bounded) and whose lines can be awaited. */
class Child {
  constructor(name, args, opts = {}) {
    this.name = name;
    this.log = "";
    this.exit = null;
    this.waiters = [];
    this.proc = spawn(ringside(), args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
    children.add(this.proc);
    const onData = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-LOG_TAIL_BYTES);
      this.waiters = this.waiters.filter((w) => !w(this.log));
    };
    this.proc.stdout.on("data", onData);
    this.proc.stderr.on("data", onData);
    this.exited = new Promise((resolve) => {
      this.proc.on("exit", (code, signal) => {
        children.delete(this.proc);
        this.exit = { code, signal };
        this.waiters = this.waiters.filter((w) => !w(this.log));
        resolve(this.exit);
      });
    });
  }

  /** Resolves with the first match of `re` in the output (or rejects after `ms`). */
  waitFor(re, ms = 20_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name}: no ${re} within ${ms} ms; output:\n${this.log}`)),
        ms,
      );
      const check = (log) => {
        const m = log.match(re);
        if (m) {
          clearTimeout(timer);
          resolve(m);
          return true;
        }
        if (this.exit !== null) {
          clearTimeout(timer);
          reject(new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before ${re}; output:\n${this.log}`));
          return true;
        }
        return false;
      };
      if (!check(this.log)) this.waiters.push(check);
    });
  }

  kill(signal = "SIGKILL") {
    if (this.exit === null) this.proc.kill(signal);
    return this.exited;
  }
}

/**
 * Starts `ringside serve` on a loopback port (a fresh one unless `port` is
 * given) with its producer socket in `dir`; resolves once it serves, with
 * `url` set to where the console is.
 */
export async function startSidecar({ dir, port = 0, args = [] }) {
  const sidecar = new Child("ringside serve", [
    "serve",
    "--socket",
    join(dir, "ringside.sock"),
    "--listen",
    `127.0.0.1:${port}`,
    ...args,
  ], { env: { ...process.env, RUST_LOG: "info" } });
  const m = await sidecar.waitFor(/serving gRPC.* listen=127\.0\.0\.1:(\d+)/);
  sidecar.port = Number(m[1]);
  sidecar.url = `${args.includes("--tls-cert") ? "https" : "http"}://127.0.0.1:${sidecar.port}/`;
  return sidecar;
}

/** Starts `ringside load` against the sidecar socket in `dir`. */
export function startLoad({ dir, rate, topics = 4, size = 64, duration = "60s", count = 0, producers = 1 }) {
  return new Child("ringside load", [
    "load",
    "--socket",
    join(dir, "ringside.sock"),
    "--rate",
    String(rate),
    "--topics",
    String(topics),
    "--size",
    String(size),
    "--duration",
    duration,
    "--count",
    String(count),
    "--producers",
    String(producers),
    "--quiet",
    "--json",
  ]);
}

/** Runs a ringside subcommand to completion: its exit status and output. */
export function run(args, { timeoutMs = 30_000 } = {}) {
  return runProgram(ringside(), args, { timeoutMs });
}

/** Runs a program to completion: its exit status and output. */
export function runProgram(program, args, { timeoutMs = 30_000, cwd = undefined } = {}) {
  const r = spawnSync(program, args, { timeout: timeoutMs, maxBuffer: 16 << 20, cwd });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** Chromium as the CI machine has it: headless, no background traffic, a fresh profile. */
export async function launchBrowser({ ignoreHTTPSErrors = false } = {}) {
  const profile = tempDir("chromium");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 1000 },
    ignoreHTTPSErrors,
  });
  const pageErrors = [];
  context.on("page", (p) => p.on("pageerror", (e) => pageErrors.push(e.message)));
  return {
    context,
    pageErrors,
    async newPage() {
      const p = await context.newPage();
      p.on("pageerror", (e) => pageErrors.push(e.message));
      return p;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Text of the element with this id. */
export async function text(page, id) {
  return (await page.locator(`#${id}`).textContent()) ?? "";
}

/** A number shown with thousands separators (e.g. `12,345`). */
export async function number(page, id) {
  return Number((await text(page, id)).replace(/,/g, ""));
}

/** Waits until `fn` (run in the page with `arg`) is truthy. */
export function until(page, fn, arg, ms = 20_000) {
  return page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
}

/** The tail's lines as the page shows them. */
export function tailLines(page) {
  return page.$$eval("#tail-lines > div:not([hidden])", (divs) =>
    divs.map((d) => ({
      kind: d.dataset.kind,
      topic: d.dataset.topic ?? null,
      frames: d.dataset.frames ?? null,
      firstSeq: d.dataset.firstSeq ?? null,
      reason: d.dataset.reason ?? null,
      text: d.textContent,
    })),
  );
}

/** Sets the tail form, presses Start, and waits until the page shows the new tail. */
export async function startTail(page, { filter = "", match = "exact", from = "latest", seq = "" } = {}) {
  await page.fill("#tail-filter", filter);
  await page.selectOption("#tail-match", match);
  await page.selectOption("#tail-from", from);
  if (from === "sequence") await page.fill("#tail-seq", String(seq));
  await clickAndWaitForNewTail(page, "#tail-apply");
}

/** Clicks something that starts a new tail and waits until the page has drawn it. */
export async function clickAndWaitForNewTail(page, selector) {
  const session = await page.$eval("#tail-lines", (d) => Number(d.dataset.session ?? 0));
  await page.click(selector);
  await until(page, (s) => Number(document.getElementById("tail-lines").dataset.session) > s, session);
}

/** Saves a screenshot under test-results/ (and, with RINGSIDE_BLESS=1, as `blessAs`). */
export async function screenshot(page, name, blessAs = null) {
  mkdirSync(RESULTS, { recursive: true });
  const path = join(RESULTS, name);
  await page.screenshot({ path, fullPage: true });
  if (blessAs !== null && process.env.RINGSIDE_BLESS) {
    await page.screenshot({ path: join(REPO, blessAs), fullPage: true });
  }
  return path;
}

/** Writes a small text file (a token file, say) and returns its path. */
export function writeFile(dir, name, content) {
  const p = join(dir, name);
  writeFileSync(p, content, { mode: 0o600 });
  return p;
}

/** True when `ringside serve --help` lists the flag. */
export function serveHasFlag(flag) {
  return run(["serve", "--help"]).stdout.includes(flag);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
