// Builds the console into dist/ (committed): bundles src/ with esbuild, copies
// static/, and writes dist/manifest.json with the SHA-256 of every input and
// output. sidecar/tests/console_fresh.rs recomputes the input hashes and fails
// when the committed bundle is stale. Run through `npm run build` (which first
// regenerates gen/ from the proto and type-checks).
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..");
const dist = join(here, "dist");

// What the bundle is built from, relative to the repository root. A directory
// means every file under it. Keep in step with nothing: the Rust test reads
// this list from the manifest.
const INPUTS = [
  "console/src",
  "console/static",
  "console/build.mjs",
  "console/buf.gen.yaml",
  "console/package.json",
  "console/package-lock.json",
  "console/tsconfig.json",
  "proto/ringside/v1/ringside.proto",
];

const sha256 = (path) => createHash("sha256").update(readFileSync(path)).digest("hex");
const posix = (p) => p.split(sep).join("/");

function files(root) {
  const abs = join(repo, root);
  if (statSync(abs).isFile()) return [root];
  const out = [];
  for (const name of readdirSync(abs)) out.push(...files(`${root}/${name}`));
  return out;
}

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);

await esbuild.build({
  entryPoints: [join(here, "src/main.ts")],
  outfile: join(dist, "console.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020", "chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  sourcemap: false,
  logLevel: "warning",
});
for (const name of readdirSync(join(here, "static"))) {
  copyFileSync(join(here, "static", name), join(dist, name));
}

const inputs = {};
for (const f of INPUTS.flatMap(files).sort()) inputs[f] = sha256(join(repo, f));
const outputs = {};
for (const name of readdirSync(dist).sort()) outputs[posix(relative(repo, join(dist, name)))] = sha256(join(dist, name));

const manifest = {
  about:
    "Written by `cd console && npm ci && npm run build`. sidecar/tests/console_fresh.rs fails when an input changed since.",
  roots: INPUTS,
  inputs,
  outputs,
};
writeFileSync(join(dist, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`console: built ${Object.keys(outputs).join(", ")} from ${Object.keys(inputs).length} inputs`);
