/**
 * The live tail: one `Subscribe` stream, shown as a fixed number of lines.
 *
 * Bounded: the page keeps at most `TAIL_LINES` lines (frames, losses, notes)
 * in a ring; a batch with more frames than fit is counted, not stored, and
 * each kept frame holds a copy of at most `PREVIEW_BYTES` of its payload
 * (never a view into the received buffer). The lines are drawn at most once
 * per animation frame into a fixed pool of rows, however fast frames arrive.
 *
 * Pause cancels the stream and keeps the batch's `resume_seq`; Resume
 * subscribes again from it, so anything the ring overwrote meanwhile arrives
 * as loss records, inline. When the stream ends (a sidecar restart), the tail
 * resumes from the last `resume_seq` with backoff and shows the gap.
 */
import { LossReason, type Batch, type SubscribeRequest } from "../gen/ringside/v1/ringside_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SubscribeRequestSchema } from "../gen/ringside/v1/ringside_pb.js";
import { Code, ConnectError, describe, type Api } from "./api.js";
import type { Health } from "./health.js";
import { RingBuffer } from "./ringbuffer.js";
import { byId, setText } from "./dom.js";
import { clock, count, hex64, preview, rate } from "./format.js";

/** Lines kept and shown. */
export const TAIL_LINES = 300;
/**
 * Losses and notes (gaps, reconnects) are also kept apart, newest last, so
 * they stay readable when frames scroll past faster than a person can read.
 */
export const TAIL_EVENTS = 24;
/** Payload bytes copied per kept frame for its preview. */
export const PREVIEW_BYTES = 48;
const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5000;

type Line =
  | { kind: "frame"; seq: bigint; ts: bigint; topic: string; producer: number; size: number; head: Uint8Array }
  | { kind: "loss"; reason: LossReason; frames: bigint; firstSeq: bigint }
  | { kind: "note"; text: string; cls: "line-note" | "line-gap" };

/** Where a subscription starts. */
export type From = { kind: "latest" } | { kind: "earliest" } | { kind: "sequence"; seq: bigint };

/** What to tail. */
export interface TailOptions {
  topics: string[];
  prefixes: string[];
  from: From;
}

type State = "stopped" | "live" | "paused" | "reconnecting" | "waiting for token" | "error";

const REASONS: Record<number, string> = {
  [LossReason.LAPPED]: "LAPPED (the ring overwrote them before they were read)",
  [LossReason.ABANDONED]: "ABANDONED (a producer claimed them and died or stalled)",
  [LossReason.CORRUPT]: "CORRUPT (they failed validation)",
};

export class Tail {
  private readonly lines = new RingBuffer<Line>(TAIL_LINES);
  private readonly events = new RingBuffer<Line>(TAIL_EVENTS);
  private readonly view = byId<HTMLDivElement>("tail-lines");
  private readonly linesView = new LinePool(this.view, TAIL_LINES);
  private readonly eventsView = new LinePool(byId("tail-events"), TAIL_EVENTS);

  private options: TailOptions = { topics: [], prefixes: [], from: { kind: "latest" } };
  /** Bumped on every (re)start and pause: a loop of an older generation stops. */
  private generation = 0;
  private ctrl: AbortController | null = null;
  private state: State = "stopped";
  private resumeSeq: bigint | null = null;
  private ringId: bigint | null = null;

  private framesReceived = 0;
  private readonly lost = { lapped: 0n, abandoned: 0n, corrupt: 0n };
  private reconnects = 0;
  private rateBase = { frames: 0, t: performance.now() };
  private frameRate = 0;
  private renderPending = false;
  /** Bumped by `start`; shown as `data-session` on the lines once drawn (tests wait for it). */
  private session = 0;

  constructor(
    private readonly api: Api,
    private readonly health: Health,
  ) {
    window.setInterval(() => this.measureRate(), 1000);
  }

  /** Starts a new subscription with these options (clears the lines). */
  start(options: TailOptions): void {
    this.stopStream();
    this.session += 1;
    this.options = options;
    this.resumeSeq = null;
    this.ringId = null;
    this.lines.clear();
    this.lines.dropped = 0;
    this.events.clear();
    this.health.clear("Subscribe");
    this.framesReceived = 0;
    this.lost.lapped = this.lost.abandoned = this.lost.corrupt = 0n;
    this.reconnects = 0;
    this.rateBase = { frames: 0, t: performance.now() };
    this.note(`tailing ${describeOptions(options)}`, "line-note");
    this.run();
  }

  /** Cancels the stream, keeping the position to resume from. */
  pause(): void {
    if (this.state === "paused" || this.state === "stopped") return;
    this.stopStream();
    this.setState("paused");
    this.note(
      this.resumeSeq === null ? "paused" : `paused; Resume continues at seq ${count(this.resumeSeq)}`,
      "line-note",
    );
  }

  /** Continues after `pause` from the last `resume_seq`. */
  resume(): void {
    if (this.state !== "paused") return;
    this.note(
      this.resumeSeq === null ? "resumed" : `resumed at seq ${count(this.resumeSeq)}`,
      "line-note",
    );
    this.run();
  }

  /** True while paused. */
  isPaused(): boolean {
    return this.state === "paused";
  }

  /** Subscribes again at once (a new token), unless paused or stopped. */
  retry(): void {
    if (this.state === "paused" || this.state === "stopped") return;
    this.stopStream();
    this.run();
  }

  private stopStream(): void {
    this.generation += 1;
    this.ctrl?.abort();
    this.ctrl = null;
  }

  private request(from: From): MessageInitShape<typeof SubscribeRequestSchema> {
    const start: SubscribeRequest["start"] =
      from.kind === "sequence"
        ? { case: "sequence", value: from.seq }
        : from.kind === "earliest"
          ? { case: "earliest", value: true }
          : { case: "latest", value: true };
    return { start, topics: this.options.topics, topicPrefixes: this.options.prefixes };
  }

  private run(): void {
    this.generation += 1;
    void this.loop(this.generation);
  }

  private async loop(gen: number): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    /** When the stream last ended unexpectedly, and why (for the gap note). */
    let down: { at: number; why: string } | null = null;
    /** Set after the sidecar refused to resume at a sequence (a new ring). */
    let fromOverride: From | null = null;
    while (gen === this.generation) {
      const from: From = fromOverride ?? (this.resumeSeq !== null ? { kind: "sequence", seq: this.resumeSeq } : this.options.from);
      const ctrl = new AbortController();
      this.ctrl = ctrl;
      let first = true;
      try {
        this.setState(down === null ? "live" : "reconnecting");
        for await (const batch of this.api.client.subscribe(this.request(from), { signal: ctrl.signal })) {
          if (gen !== this.generation) return;
          if (first) {
            first = false;
            backoff = MIN_BACKOFF_MS;
            fromOverride = null;
            this.health.ok("Subscribe");
            this.setState("live");
            if (down !== null) {
              const lost = batch.losses.reduce((s, l) => s + l.frames, 0n);
              const secs = ((Date.now() - down.at) / 1000).toFixed(1);
              this.note(
                `── gap: the stream was down ${secs} s (${down.why}); resumed at seq ${from.kind === "sequence" ? count(from.seq) : from.kind}; ` +
                  (lost === 0n ? "no frames lost across it" : `${count(lost)} frames lost across it (below)`),
                "line-gap",
              );
              down = null;
            }
          }
          this.onBatch(batch);
        }
        if (gen !== this.generation) return;
        throw new ConnectError("the sidecar ended the stream", Code.Unavailable);
      } catch (e) {
        if (gen !== this.generation || ctrl.signal.aborted) return;
        const err = ConnectError.from(e);
        if (err.code === Code.Unauthenticated) {
          this.health.fail("Subscribe", err);
          this.setState("waiting for token");
          return; // the token form calls retry()
        }
        if (err.code === Code.InvalidArgument) {
          if (from.kind === "sequence" && this.resumeSeq !== null && from.seq === this.resumeSeq && fromOverride === null) {
            // The sidecar has no such sequence: its ring was replaced (sequences restarted).
            this.note(
              `the sidecar refused to resume at seq ${count(from.seq)} (${describe(err)}); its ring was replaced, so starting again from the earliest frame`,
              "line-gap",
            );
            fromOverride = { kind: "earliest" };
            this.resumeSeq = null;
            continue;
          }
          this.health.fail("Subscribe", err);
          this.setState("error");
          this.note(`refused: ${describe(err)}`, "line-gap");
          return;
        }
        this.health.fail("Subscribe", err);
        if (down === null) {
          down = { at: Date.now(), why: describe(err) };
          this.note(
            `stream ended: ${describe(err)}; reconnecting` +
              (this.resumeSeq !== null ? ` and resuming at seq ${count(this.resumeSeq)}` : ""),
            "line-gap",
          );
        }
        this.reconnects += 1;
        this.setState("reconnecting");
        const delay = backoff * (0.75 + Math.random() * 0.5);
        backoff = Math.min(MAX_BACKOFF_MS, backoff * 2);
        await new Promise((r) => window.setTimeout(r, delay));
      }
    }
  }

  private onBatch(b: Batch): void {
    if (this.ringId !== null && b.ringId !== this.ringId) {
      this.note(`ring replaced: id ${hex64(this.ringId)} → ${hex64(b.ringId)}; sequences restarted`, "line-gap");
    }
    this.ringId = b.ringId;
    for (const l of b.losses) {
      if (l.reason === LossReason.LAPPED) this.lost.lapped += l.frames;
      else if (l.reason === LossReason.ABANDONED) this.lost.abandoned += l.frames;
      else this.lost.corrupt += l.frames;
      const line: Line = { kind: "loss", reason: l.reason, frames: l.frames, firstSeq: l.firstSeq };
      this.lines.push(line);
      this.events.push(line);
    }
    const frames = b.frames;
    this.framesReceived += frames.length;
    // Frames that would be pushed out by later frames of this same batch are only counted.
    const keepFrom = Math.max(0, frames.length - (TAIL_LINES - Math.min(b.losses.length, TAIL_LINES - 1)));
    this.lines.skip(keepFrom);
    for (let i = keepFrom; i < frames.length; i++) {
      const f = frames[i];
      this.lines.push({
        kind: "frame",
        seq: f.seq,
        ts: f.timestampNs,
        topic: f.topic,
        producer: f.producerId,
        size: f.payload.length,
        head: f.payload.slice(0, PREVIEW_BYTES),
      });
    }
    this.resumeSeq = b.resumeSeq;
    this.scheduleRender();
  }

  private note(text: string, cls: "line-note" | "line-gap"): void {
    const line: Line = { kind: "note", text: `${clock(BigInt(Date.now()) * 1_000_000n)}  ${text}`, cls };
    this.lines.push(line);
    this.events.push(line);
    this.scheduleRender();
  }

  /** The state is shown by the next render, with the counts and the resume sequence, so
   * the page never shows a new state next to numbers of the one before (a stream that
   * ended right after its last batch showed "reconnecting" beside the resume sequence of
   * the batch before it). */
  private setState(s: State): void {
    this.state = s;
    this.scheduleRender();
  }

  private measureRate(): void {
    const now = performance.now();
    const dt = (now - this.rateBase.t) / 1000;
    if (dt > 0) this.frameRate = (this.framesReceived - this.rateBase.frames) / dt;
    this.rateBase = { frames: this.framesReceived, t: now };
    this.scheduleRender();
  }

  private scheduleRender(): void {
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      this.render();
    });
  }

  private render(): void {
    const atBottom = this.view.scrollTop + this.view.clientHeight >= this.view.scrollHeight - 4;
    this.linesView.show(this.lines);
    this.eventsView.show(this.events);
    this.view.dataset.session = String(this.session);
    if (atBottom) this.view.scrollTop = this.view.scrollHeight;
    const s = this.state;
    const pill = byId("tail-state");
    setText(pill, s);
    pill.className = `pill ${s === "live" ? "pill-ok" : s === "error" ? "pill-bad" : "pill-wait"}`;
    const pause = byId<HTMLButtonElement>("tail-pause");
    pause.disabled = s === "stopped" || s === "error" || s === "waiting for token";
    setText(pause, s === "paused" ? "Resume" : "Pause");
    setText(byId("tail-frames"), count(this.framesReceived));
    setText(byId("tail-rate"), rate(this.frameRate));
    setText(byId("tail-resume"), this.resumeSeq === null ? "–" : this.resumeSeq.toString());
    setText(byId("tail-lost-lapped"), this.lost.lapped.toString());
    setText(byId("tail-lost-abandoned"), this.lost.abandoned.toString());
    setText(byId("tail-lost-corrupt"), this.lost.corrupt.toString());
    setText(byId("tail-dropped"), count(this.lines.dropped));
    setText(byId("tail-reconnects"), count(this.reconnects));
  }
}

/** A fixed set of row elements showing the items of a ring buffer, oldest first. */
class LinePool {
  private readonly rows: HTMLDivElement[] = [];
  private readonly shown: (Line | undefined)[] = [];

  constructor(parent: HTMLElement, size: number) {
    for (let i = 0; i < size; i++) {
      const div = document.createElement("div");
      div.hidden = true;
      this.rows.push(div);
      this.shown.push(undefined);
    }
    parent.replaceChildren(...this.rows);
  }

  /** Rewrites only the rows whose line changed since the last call. */
  show(lines: RingBuffer<Line>): void {
    for (let i = 0; i < this.rows.length; i++) {
      const line = i < lines.length ? lines.at(i) : undefined;
      if (this.shown[i] === line) continue;
      this.shown[i] = line;
      const div = this.rows[i];
      if (line === undefined) {
        div.hidden = true;
        continue;
      }
      div.hidden = false;
      div.className = line.kind === "frame" ? "" : line.kind === "loss" ? "line-loss" : line.cls;
      div.textContent = lineText(line);
      const d = div.dataset;
      d.kind = line.kind;
      if (line.kind === "frame") d.topic = line.topic;
      else delete d.topic;
      if (line.kind === "loss") {
        d.frames = line.frames.toString();
        d.firstSeq = line.firstSeq.toString();
        d.reason = LossReason[line.reason] ?? String(line.reason);
      } else {
        delete d.frames;
        delete d.firstSeq;
        delete d.reason;
      }
    }
  }
}

function lineText(l: Line): string {
  switch (l.kind) {
    case "frame":
      return `${l.seq}  ${clock(l.ts)}  ${l.topic}  p${l.producer}  ${l.size} B  ${preview(l.head, l.size)}`;
    case "loss": {
      const last = l.firstSeq + l.frames - 1n;
      return `▲ LOST ${count(l.frames)} frames, seq ${l.firstSeq}..${last}: ${REASONS[l.reason] ?? `reason ${l.reason}`}`;
    }
    case "note":
      return l.text;
  }
}

function describeOptions(o: TailOptions): string {
  const what: string[] = [];
  if (o.topics.length > 0) what.push(`topics ${o.topics.join(", ")}`);
  if (o.prefixes.length > 0) what.push(`prefixes ${o.prefixes.map((p) => `${p}*`).join(", ")}`);
  const from = o.from.kind === "sequence" ? `seq ${o.from.seq}` : o.from.kind;
  return `${what.length > 0 ? what.join(" or ") : "all topics"} from ${from}`;
}
