/**
 * The sidecar's state: `Info` once a second (ring, ingest chart, memory,
 * producers, subscribers, losses) and `ListTopics` every two seconds (the
 * topic table, with rates from the change between two polls).
 */
import type { InfoResponse, ListTopicsResponse } from "../gen/ringside/v1/ringside_pb.js";
import type { Api } from "./api.js";
import type { Chart } from "./chart.js";
import type { Health } from "./health.js";
import { byId, rows, setText, text } from "./dom.js";
import { ago, bytes, count, duration, hex64, rate } from "./format.js";

const INFO_PERIOD_MS = 1000;
const TOPICS_PERIOD_MS = 2000;
const CALL_TIMEOUT_MS = 5000;
/** Most retry delay after failed polls. */
const MAX_BACKOFF_MS = 5000;
/** Most topic rows shown (the sidecar's table holds up to 1024 topics). */
export const MAX_TOPIC_ROWS = 100;

interface TopicSample {
  frames: bigint;
  payloadBytes: bigint;
  t: number;
}

/** A poll loop that never overlaps itself and backs off while failing. */
class Poller {
  private timer: number | undefined;
  private generation = 0;
  private failures = 0;

  constructor(
    private readonly period: number,
    private readonly once: () => Promise<boolean>,
  ) {}

  /** (Re)starts now. */
  start(): void {
    this.generation += 1;
    window.clearTimeout(this.timer);
    void this.tick(this.generation);
  }

  private async tick(gen: number): Promise<void> {
    const ok = await this.once();
    if (gen !== this.generation) return;
    this.failures = ok ? 0 : this.failures + 1;
    const delay = ok ? this.period : Math.min(MAX_BACKOFF_MS, this.period * 2 ** Math.min(this.failures, 4));
    this.timer = window.setTimeout(() => void this.tick(gen), delay);
  }
}

export class Dashboard {
  private readonly info: Poller;
  private readonly topics: Poller;
  private prevTopics = new Map<string, TopicSample>();
  private lastInfo: InfoResponse | null = null;

  constructor(
    private readonly api: Api,
    private readonly health: Health,
    private readonly chart: Chart,
    private readonly onTailTopic: (topic: string) => void,
  ) {
    this.info = new Poller(INFO_PERIOD_MS, () => this.pollInfo());
    this.topics = new Poller(TOPICS_PERIOD_MS, () => this.pollTopics());
    byId("topics-rows").addEventListener("click", (ev) => {
      const t = ev.target;
      if (t instanceof HTMLButtonElement && t.dataset.topic !== undefined) this.onTailTopic(t.dataset.topic);
    });
  }

  /** Starts polling, or polls again at once (after a new token). */
  start(): void {
    this.info.start();
    this.topics.start();
  }

  private async pollInfo(): Promise<boolean> {
    try {
      const info = await this.api.client.info({}, { timeoutMs: CALL_TIMEOUT_MS });
      this.health.ok("Info");
      this.showInfo(info);
      return true;
    } catch (e) {
      this.health.fail("Info", e);
      return false;
    }
  }

  private async pollTopics(): Promise<boolean> {
    try {
      const res = await this.api.client.listTopics({}, { timeoutMs: CALL_TIMEOUT_MS });
      this.health.ok("ListTopics");
      this.showTopics(res, Date.now());
      return true;
    } catch (e) {
      this.health.fail("ListTopics", e);
      return false;
    }
  }

  private showInfo(i: InfoResponse): void {
    this.lastInfo = i;
    text("version", i.version);
    text("uptime", duration(i.uptimeSeconds));
    text("ring-id", hex64(i.ringId));
    text("ring-capacity", bytes(i.ringCapacityBytes));
    text("ring-max-payload", bytes(i.maxPayloadBytes));
    text("ring-write-position", `${count(i.writePosition)} B (lap ${count(i.ringCapacityBytes > 0n ? i.writePosition / i.ringCapacityBytes : 0n)})`);
    text("ring-next-seq", count(i.nextSeq));
    text("ring-oldest-seq", i.oldestSeq === undefined ? "empty" : count(i.oldestSeq));
    text("ring-retained", i.oldestSeq === undefined ? "0" : count(i.nextSeq - i.oldestSeq));
    text("ring-retention", i.retentionSeconds > 0 ? duration(i.retentionSeconds) : "– (idle)");
    text("ring-adopted", i.ringAdopted ? "yes (handed back by a producer)" : "no (fresh ring)");

    text("ingest-fps", rate(i.ingestFramesPerSec));
    text("ingest-bps", bytes(i.ingestBytesPerSec));
    this.chart.add({ t: Date.now(), fps: i.ingestFramesPerSec, bps: i.ingestBytesPerSec });

    const rss = Number(i.rssAnonBytes);
    const budget = Number(i.memoryBudgetBytes);
    text("mem-rss", rss > 0 ? bytes(rss) : "unknown");
    text("mem-budget", bytes(budget));
    text("mem-limit", i.memoryLimitBytes > 0n ? bytes(i.memoryLimitBytes) : "none");
    const meter = byId<HTMLMeterElement>("mem-meter");
    meter.max = Math.max(1, budget);
    meter.low = 0.7 * meter.max;
    meter.high = 0.9 * meter.max;
    meter.optimum = 0;
    meter.value = rss;
    text("mem-pct", budget > 0 && rss > 0 ? `RssAnon is ${((100 * rss) / budget).toFixed(1)}% of the budget` : "");

    text("prod-connected", count(i.producersConnected));
    text("prod-admitted", count(i.producersAdmitted));
    text("prod-refused", count(i.producersRefused));
    text("loss-lapped", count(i.lostLapped));
    text("loss-abandoned", count(i.lostAbandoned));
    text("loss-corrupt", count(i.lostCorrupt));
    text("out-frames", count(i.framesOut));
    text("out-bytes", bytes(i.bytesOut));

    text("subs-active", count(i.subscribersActive));
    text("subs-max", count(i.subscribersMax));
    text("subs-refused", count(i.subscribersRefused));
    text("subs-reaped", count(i.subscribersReaped));
    const cap = Number(i.ringCapacityBytes);
    const trs = rows(byId<HTMLTableSectionElement>("subs-rows"), i.subscribers.length, 4);
    i.subscribers.forEach((s, k) => {
      const cells = trs[k].cells;
      setText(cells[0], String(s.slot));
      setText(cells[1], bytes(s.lagBytes));
      setText(cells[2], cap > 0 ? `${((100 * Number(s.lagBytes)) / cap).toFixed(1)}%` : "–");
      setText(cells[3], count(s.framesOut));
    });
    const listed = BigInt(i.subscribers.length);
    text(
      "subs-note",
      i.subscribersActive > listed
        ? `showing the ${listed} largest lags of ${count(i.subscribersActive)} subscribers`
        : i.subscribersActive === 0n
          ? "no subscribers"
          : "this page's own tail is one of them",
    );
  }

  private showTopics(res: ListTopicsResponse, now: number): void {
    const next = new Map<string, TopicSample>();
    const shown = res.topics.slice(0, MAX_TOPIC_ROWS);
    const trs = rows(byId<HTMLTableSectionElement>("topics-rows"), shown.length, 6);
    shown.forEach((t, k) => {
      const prev = this.prevTopics.get(t.name);
      const dt = prev === undefined ? 0 : (now - prev.t) / 1000;
      const valid = prev !== undefined && dt > 0 && t.frames >= prev.frames;
      const fps = valid ? Number(t.frames - prev.frames) / dt : NaN;
      const bps = valid ? Number(t.payloadBytes - prev.payloadBytes) / dt : NaN;
      const cells = trs[k].cells;
      cells[0].className = "topic";
      setText(cells[0], t.name);
      setText(cells[1], count(t.frames));
      setText(cells[2], Number.isNaN(fps) ? "…" : rate(fps));
      setText(cells[3], Number.isNaN(bps) ? "…" : bytes(bps));
      setText(cells[4], ago(t.lastTimestampNs, now));
      let button = cells[5].firstElementChild;
      if (!(button instanceof HTMLButtonElement)) {
        button = document.createElement("button");
        (button as HTMLButtonElement).type = "button";
        setText(button as HTMLButtonElement, "tail");
        cells[5].replaceChildren(button);
      }
      (button as HTMLButtonElement).dataset.topic = t.name;
      (button as HTMLButtonElement).title = `tail only ${t.name}`;
    });
    for (const t of shown) next.set(t.name, { frames: t.frames, payloadBytes: t.payloadBytes, t: now });
    this.prevTopics = next;
    const fast = (this.lastInfo?.ingestFramesPerSec ?? 0) > 60_000;
    text("topics-meta", `${res.topics.length}${res.truncated ? "+" : ""} topics`);
    const notes: string[] = [];
    if (res.topics.length > shown.length) notes.push(`${res.topics.length - shown.length} more topics not shown`);
    if (res.truncated) notes.push("more topics were seen than the sidecar's table holds; some are not listed");
    if (fast) notes.push("above about 65k frames/s the sidecar samples topics: counts and rates are lower bounds");
    text("topics-note", notes.join(" · "));
  }
}
