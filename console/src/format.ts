/** Human-readable numbers for the console. */

const IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** `1536` → `1.5 KiB`. */
export function bytes(n: number | bigint): string {
  let v = Number(n);
  if (!Number.isFinite(v)) return "–";
  let u = 0;
  while (Math.abs(v) >= 1024 && u < IEC.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${IEC[u]}`;
}

/** `12345678` → `12,345,678`. */
export function count(n: number | bigint): string {
  return typeof n === "bigint" ? n.toLocaleString("en-US") : Math.round(n).toLocaleString("en-US");
}

/** A rate: `123456.7` → `123.5k`. */
export function rate(n: number): string {
  if (!Number.isFinite(n) || n < 0) return "–";
  if (n < 1000) return n < 10 ? n.toFixed(1) : n.toFixed(0);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 2 : 1)}k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)}M`;
  return `${(n / 1e9).toFixed(2)}G`;
}

/** Seconds as `45 s`, `12 min 3 s`, `2 h 5 min`, `3 d 4 h`. */
export function duration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "–";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${s.toFixed(0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** A UNIX-epoch nanosecond timestamp as local `HH:MM:SS.mmm`. */
export function clock(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const d = new Date(ms);
  const p = (x: number, w = 2) => x.toString().padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** How long ago a UNIX-epoch nanosecond timestamp was, from `nowMs`. */
export function ago(ns: bigint, nowMs: number): string {
  if (ns === 0n) return "–";
  const s = (nowMs - Number(ns / 1_000_000n)) / 1000;
  return s < 0 ? "now" : `${duration(s)} ago`;
}

/** A ring id as 16 hex digits. */
export function hex64(v: bigint): string {
  return v.toString(16).padStart(16, "0");
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * A short preview of a payload whose first bytes are `head` (a copy of at most
 * a few dozen bytes) out of `size`: text when they are printable UTF-8,
 * otherwise hex.
 */
export function preview(head: Uint8Array, size: number): string {
  let text: string | null = null;
  try {
    const s = decoder.decode(head, { stream: head.length < size });
    // Printable only: no control characters but tab.
    if (!/[\u0000-\u0008\u000a-\u001f\u007f]/.test(s)) text = s;
  } catch {
    text = null;
  }
  const more = size > head.length ? "…" : "";
  if (text !== null) return `${text}${more}`;
  let h = "";
  for (const b of head) h += b.toString(16).padStart(2, "0");
  return `0x${h}${more}`;
}
