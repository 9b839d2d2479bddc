/**
 * Ingest over the last minutes: frames/s and bytes/s, each scaled to its own
 * maximum, drawn on a canvas. Points live in a fixed ring; older ones are
 * dropped and counted.
 */
import { RingBuffer } from "./ringbuffer.js";
import { bytes, duration, rate } from "./format.js";
import { byId, setText } from "./dom.js";

/** One sample. */
export interface Point {
  /** `Date.now()` when taken. */
  t: number;
  fps: number;
  bps: number;
}

/** Points kept: five minutes at one Info poll per second. */
export const CHART_POINTS = 300;

const FPS_COLOR = "#4cc2ff";
const BPS_COLOR = "#ffb347";
const GRID = "#222a33";

export class Chart {
  readonly points = new RingBuffer<Point>(CHART_POINTS);
  private readonly canvas = byId<HTMLCanvasElement>("chart");
  private pending = false;

  add(p: Point): void {
    this.points.push(p);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.draw();
      });
    }
  }

  private draw(): void {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const g = c.getContext("2d");
    if (g === null) return;
    g.clearRect(0, 0, w, h);
    const n = this.points.length;
    const first = this.points.at(0);
    const last = this.points.last();
    let maxFps = 0;
    let maxBps = 0;
    for (let i = 0; i < n; i++) {
      const p = this.points.at(i);
      if (p === undefined) continue;
      maxFps = Math.max(maxFps, p.fps);
      maxBps = Math.max(maxBps, p.bps);
    }
    setText(byId("chart-max-fps"), rate(maxFps));
    setText(byId("chart-max-bps"), bytes(maxBps));
    setText(byId("chart-dropped"), this.points.dropped.toLocaleString("en-US"));
    const spanMs = first !== undefined && last !== undefined ? last.t - first.t : 0;
    setText(byId("chart-span"), duration(spanMs / 1000));

    // Two bands: frames/s on top, bytes/s below, each scaled to its own maximum.
    const pad = 4 * dpr;
    const band = h / 2;
    g.strokeStyle = GRID;
    g.lineWidth = 1;
    for (const y of [band / 2, band, band + band / 2]) {
      g.beginPath();
      g.moveTo(0, Math.round(y) + 0.5);
      g.lineTo(w, Math.round(y) + 0.5);
      g.stroke();
    }
    if (n < 2 || first === undefined || last === undefined) return;
    // The x axis spans at least a minute (at most the ring of points), newest at the right.
    const spanShown = Math.min(Math.max(spanMs, 60_000), (CHART_POINTS - 1) * 1000);
    const x = (t: number) => w - ((last.t - t) / spanShown) * w;
    const series = (pick: (p: Point) => number, max: number, bottom: number, color: string) => {
      const scale = max > 0 ? (band - 2 * pad) / max : 0;
      g.strokeStyle = color;
      g.lineWidth = 1.5 * dpr;
      g.beginPath();
      for (let i = 0; i < n; i++) {
        const p = this.points.at(i);
        if (p === undefined) continue;
        const px = x(p.t);
        const py = bottom - pad - pick(p) * scale;
        if (i === 0) g.moveTo(px, py);
        else g.lineTo(px, py);
      }
      g.stroke();
    };
    series((p) => p.fps, maxFps, band, FPS_COLOR);
    series((p) => p.bps, maxBps, h, BPS_COLOR);
  }
}
