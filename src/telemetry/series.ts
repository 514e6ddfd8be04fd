/**
 * Recent history of one endpoint (or served entity) for dashboards: a ring of fixed time slots
 * (5 s × 720 = 1 h), each holding request counts, a latency histogram and averaged gauge samples.
 * Slots are reused in place as time moves on, so memory is bounded (a slot's latency histogram is
 * allocated the first time it sees a success: ~0.3 KiB; a busy hour of one series ~250 KiB). Time
 * comes from the caller (an injected clock), so tests walk virtual time.
 */

import type { SeriesPoint } from '../api/index.js';

export const SERIES_RESOLUTION_MS = 5000;
export const SERIES_SLOTS = 720;

/**
 * Latency buckets: 4 per doubling from 0.05 ms (bucket i holds [0.05·2^(i/4), 0.05·2^((i+1)/4)) ms,
 * bucket 0 everything below 0.0595 ms), 80 buckets up to ~52 s; longer requests land in the last one.
 * A percentile is reported as the geometric middle of its bucket, so it is within a factor
 * 2^(1/8) of the exact sample percentile: at most 9% off (example: 100 requests of 10 ms each
 * fall in bucket 30, [9.05, 10.76) ms, and p50 = p99 = 9.87 ms).
 */
const LATENCY_BUCKETS = 80;
const LATENCY_MIN_MS = 0.05;
const BUCKETS_PER_DOUBLING = 4;

/** What the sampler reads from the controller, per served entity or summed per endpoint. */
export interface GaugeSample {
  ready: number;
  desired: number;
  inFlight: number;
  queued: number;
}

class Slot {
  index = -1;
  requests = 0;
  errors = 0;
  ok = 0;
  latency: Uint32Array | undefined;
  samples = 0;
  ready = 0;
  desired = 0;
  inFlightSum = 0;
  queuedSum = 0;

  reset(index: number): void {
    this.index = index;
    this.requests = this.errors = this.ok = this.samples = this.ready = this.desired = this.inFlightSum = this.queuedSum = 0;
    this.latency?.fill(0);
  }
}

export function latencyBucket(ms: number): number {
  if (!(ms > LATENCY_MIN_MS)) return 0;
  return Math.min(LATENCY_BUCKETS - 1, Math.floor(Math.log2(ms / LATENCY_MIN_MS) * BUCKETS_PER_DOUBLING));
}

/** The geometric middle of bucket `i`, in ms. */
function bucketMiddleMs(i: number): number {
  return LATENCY_MIN_MS * 2 ** ((i + 0.5) / BUCKETS_PER_DOUBLING);
}

/** The `q` percentile (0 < q ≤ 1, nearest rank) of a bucketed slot. */
function percentile(latency: Uint32Array, n: number, q: number): number {
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (let i = 0; i < latency.length; i++) {
    seen += latency[i] ?? 0;
    if (seen >= rank) return Math.round(bucketMiddleMs(i) * 1000) / 1000;
  }
  return Math.round(bucketMiddleMs(latency.length - 1) * 1000) / 1000;
}

export class SeriesRing {
  private readonly slots: Array<Slot | undefined>;

  constructor(readonly resolutionMs = SERIES_RESOLUTION_MS, readonly size = SERIES_SLOTS) {
    this.slots = new Array<Slot | undefined>(size);
  }

  /** The slot for time `nowMs`, cleared if it last held an older slot's data. */
  private slotAt(nowMs: number): Slot {
    const index = Math.floor(nowMs / this.resolutionMs);
    const pos = index % this.size;
    let slot = this.slots[pos];
    if (slot === undefined) this.slots[pos] = slot = new Slot();
    if (slot.index !== index) slot.reset(index);
    return slot;
  }

  recordRequest(nowMs: number, status: number, durationMs: number): void {
    const slot = this.slotAt(nowMs);
    slot.requests++;
    if (status >= 500) slot.errors++;
    if (status >= 200 && status < 300) {
      slot.ok++;
      const latency = slot.latency ??= new Uint32Array(LATENCY_BUCKETS);
      const b = latencyBucket(durationMs);
      latency[b] = (latency[b] ?? 0) + 1;
    }
  }

  recordGauges(nowMs: number, g: GaugeSample): void {
    const slot = this.slotAt(nowMs);
    slot.samples++;
    slot.ready = g.ready;
    slot.desired = g.desired;
    slot.inFlightSum += g.inFlight;
    slot.queuedSum += g.queued;
  }

  /**
   * The slots of the last `windowMs` up to `nowMs`, oldest first, one per `resolutionMs`; the
   * last one is the slot in progress, its qps taken over the part that has passed (at least 1 s).
   */
  points(nowMs: number, windowMs: number): SeriesPoint[] {
    const last = Math.floor(nowMs / this.resolutionMs);
    const count = Math.min(this.size, Math.max(1, Math.ceil(windowMs / this.resolutionMs)));
    const points: SeriesPoint[] = [];
    for (let index = last - count + 1; index <= last; index++) {
      const startMs = index * this.resolutionMs;
      const s = this.slots[((index % this.size) + this.size) % this.size];
      const slot = s !== undefined && s.index === index ? s : undefined;
      const spanS = (index === last ? Math.max(1000, Math.min(this.resolutionMs, nowMs - startMs)) : this.resolutionMs) / 1000;
      const requests = slot?.requests ?? 0;
      const ok = slot?.ok ?? 0;
      const sampled = slot !== undefined && slot.samples > 0 ? slot : undefined;
      points.push({
        timestamp_ms: startMs,
        qps: Math.round((requests / spanS) * 1000) / 1000,
        p50_ms: ok > 0 && slot?.latency ? percentile(slot.latency, ok, 0.5) : null,
        p99_ms: ok > 0 && slot?.latency ? percentile(slot.latency, ok, 0.99) : null,
        error_rate: requests > 0 ? (slot?.errors ?? 0) / requests : null,
        replicas_ready: sampled?.ready ?? null,
        replicas_desired: sampled?.desired ?? null,
        in_flight: sampled ? sampled.inFlightSum / sampled.samples : null,
        queued: sampled ? sampled.queuedSum / sampled.samples : null,
      });
    }
    return points;
  }
}
