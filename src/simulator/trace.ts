/**
 * Request traces for the simulator: either the requests themselves (arrival times, optionally
 * how long each took) or a rate per time slot (requests per second, replayed as a Poisson process,
 * so a day at 1,000 req/s needs 1,440 numbers, not 86.4 million timestamps).
 *
 * Sources: a CSV or JSON Lines file of timestamps ({@link parseTraceText}; errors name the line),
 * an endpoint's per-5-s series ({@link traceFromRates}), inference-table timestamps
 * ({@link traceFromTimes}), and generated patterns ({@link generateTrace}: steady, step, diurnal,
 * bursty, spike, on/off; seeded, so a pattern is the same trace on every run).
 */
import { FerryError, invalidParameter } from '../errors.js';

/** The requests themselves, in arrival order. */
export interface RequestTrace {
  readonly kind: 'requests';
  /** Arrival of each request, in ms from the trace's start, ascending (ties allowed). */
  readonly arrivalsMs: Float64Array;
  /** How long the model took for each request (ms), when the trace says; otherwise the replica model draws it. */
  readonly durationsMs: Float64Array | undefined;
  /** The trace's length in ms (≥ the last arrival). */
  readonly lengthMs: number;
}

/** A request rate per slot, replayed as a Poisson process with that rate in each slot. */
export interface RateTrace {
  readonly kind: 'rates';
  readonly slotMs: number;
  /** Requests per second in slot i, i.e. in [i·slotMs, (i+1)·slotMs). */
  readonly ratesPerS: Float64Array;
  /** Seeds the arrival times, so the same trace replays the same requests. */
  readonly seed: number;
  readonly lengthMs: number;
}

export type Trace = RequestTrace | RateTrace;

/** Requests a trace file or request may hold (a day at ~12 req/s); longer traffic fits a rate trace. */
export const MAX_TRACE_REQUESTS = 1_000_000;

/** Expected number of requests of a trace. */
export function traceRequests(trace: Trace): number {
  if (trace.kind === 'requests') return trace.arrivalsMs.length;
  let sum = 0;
  for (const r of trace.ratesPerS) sum += r;
  return sum * trace.slotMs / 1000;
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/** A line-numbered 400: `Trace line 3: ...`. */
function lineError(line: number, message: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `Trace line ${line}: ${message}`);
}

/**
 * A timestamp: a number (ms since the epoch, or seconds when below 1e11, i.e. before 1973 in ms)
 * or an ISO 8601 date-time. Returns ms, or undefined when unreadable.
 */
function parseTimestamp(raw: unknown): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) && raw >= 0 ? (raw < 1e11 ? raw * 1000 : raw) : undefined;
  if (typeof raw !== 'string' || raw.trim() === '') return undefined;
  const s = raw.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return parseTimestamp(Number(s));
  const ms = Date.parse(s);
  return Number.isFinite(ms) ? ms : undefined;
}

function parseDuration(raw: unknown): number | undefined {
  const n = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 && n <= 600_000 ? n : undefined;
}

/**
 * Parses a trace file. Formats:
 * - CSV: one request per line, `timestamp[,duration_ms]`; an optional header line naming the
 *   columns (`timestamp`, `duration_ms`, in any order, other columns ignored); `#` comments.
 * - JSON Lines: one object per line, `{"timestamp": …, "duration_ms": …}` (`timestamp_ms` is
 *   accepted too, as in inference-table exports).
 * A timestamp is ms since the epoch, seconds (a number below 1e11, e.g. 1733443200.25), or an
 * ISO date-time. Lines may come in any order; the trace starts at the earliest one. Either every
 * line has a duration or none has.
 *
 * @throws FerryError INVALID_PARAMETER_VALUE naming the line, e.g.
 *   `Trace line 3: expected a timestamp (ms or s since the epoch, or ISO 8601), got "soon".`
 */
export function parseTraceText(text: string, format: 'csv' | 'jsonl'): RequestTrace {
  const times: number[] = [];
  const durations: number[] = [];
  let tsCol = 0;
  let durCol: number | undefined = 1;
  let first = true;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    let ts: unknown;
    let dur: unknown;
    if (format === 'jsonl') {
      let o: unknown;
      try {
        o = JSON.parse(line);
      } catch {
        throw lineError(lineNo, 'expected a JSON object such as {"timestamp": 1733443200000, "duration_ms": 12}.');
      }
      if (typeof o !== 'object' || o === null || Array.isArray(o)) throw lineError(lineNo, 'expected a JSON object such as {"timestamp": 1733443200000, "duration_ms": 12}.');
      const rec = o as Record<string, unknown>;
      ts = rec.timestamp ?? rec.timestamp_ms;
      dur = rec.duration_ms ?? rec.execution_duration_ms;
    } else {
      const cells = line.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
      if (first && cells.some((c) => /^[A-Za-z_]/.test(c) && parseTimestamp(c) === undefined)) {
        const t = cells.findIndex((c) => c === 'timestamp' || c === 'timestamp_ms');
        if (t < 0) throw lineError(lineNo, `a header must name a 'timestamp' column, got ${JSON.stringify(line.slice(0, 80))}.`);
        tsCol = t;
        const d = cells.findIndex((c) => c === 'duration_ms' || c === 'execution_duration_ms');
        durCol = d < 0 ? undefined : d;
        first = false;
        continue;
      }
      ts = cells[tsCol];
      dur = durCol === undefined ? undefined : cells[durCol];
      if (dur === '') dur = undefined;
    }
    first = false;
    const t = parseTimestamp(ts);
    if (t === undefined) throw lineError(lineNo, `expected a timestamp (ms or s since the epoch, or ISO 8601), got ${JSON.stringify(ts ?? null)}.`);
    if (dur !== undefined) {
      const d = parseDuration(dur);
      if (d === undefined) throw lineError(lineNo, `expected duration_ms to be a number of ms from 0 to 600000, got ${JSON.stringify(dur)}.`);
      durations.push(d);
    }
    if (durations.length !== 0 && durations.length !== times.length + 1) {
      throw lineError(lineNo, durations.length > times.length ? 'has a duration_ms but the lines before it have none (give every line one, or none).' : 'has no duration_ms but the lines before it have one (give every line one, or none).');
    }
    times.push(t);
    if (times.length > MAX_TRACE_REQUESTS) throw lineError(lineNo, `a trace holds at most ${MAX_TRACE_REQUESTS} requests (use a generated pattern or the series for longer traffic).`);
  }
  if (times.length === 0) throw new FerryError('INVALID_PARAMETER_VALUE', 'Trace has no requests (expected one timestamp per line).');
  return traceFromTimes(times, durations.length === 0 ? undefined : durations);
}

/**
 * Requests at absolute times (ms), in any order, with optional durations: the trace starts at
 * the earliest and lasts until the latest plus one second.
 */
export function traceFromTimes(timesMs: readonly number[], durationsMs?: readonly number[]): RequestTrace {
  const order = Array.from(timesMs.keys()).sort((a, b) => (timesMs[a] ?? 0) - (timesMs[b] ?? 0));
  const t0 = timesMs[order[0] ?? 0] ?? 0;
  const arrivals = new Float64Array(order.length);
  const durations = durationsMs === undefined ? undefined : new Float64Array(order.length);
  order.forEach((j, i) => {
    arrivals[i] = (timesMs[j] ?? 0) - t0;
    if (durations !== undefined) durations[i] = durationsMs?.[j] ?? 0;
  });
  const last = arrivals[arrivals.length - 1] ?? 0;
  return { kind: 'requests', arrivalsMs: arrivals, durationsMs: durations, lengthMs: last + 1000 };
}

/** A rate per slot (requests per second), e.g. the qps of an endpoint's series points. */
export function traceFromRates(ratesPerS: readonly number[], slotMs: number, seed = 1): RateTrace {
  return { kind: 'rates', slotMs, ratesPerS: Float64Array.from(ratesPerS, (r) => (Number.isFinite(r) && r > 0 ? r : 0)), seed, lengthMs: slotMs * ratesPerS.length };
}

// ---------------------------------------------------------------------------------------------
// Generated patterns
// ---------------------------------------------------------------------------------------------

export const PATTERNS = ['steady', 'step', 'diurnal', 'bursty', 'spike', 'on_off'] as const;
export type Pattern = (typeof PATTERNS)[number];

/** Parameters of a generated pattern; each pattern reads the ones it needs (see {@link generateTrace}). */
export interface PatternParams {
  pattern: Pattern;
  /** Length of the trace. */
  durationMs: number;
  /** The base (or only) rate, requests per second. */
  rps: number;
  /** The high rate of step, diurnal (peak), bursty (burst), spike and on_off. */
  peakRps: number;
  /** step: when the rate changes; spike: when the spike starts. */
  atMs: number;
  /** bursty: mean length of a burst; spike: its length; on_off: length of the on phase. */
  burstMs: number;
  /** bursty: mean time between bursts; on_off: length of the off phase. */
  gapMs: number;
  seed: number;
}

/** A pattern's slot: fine enough for the 1 s autoscaler tick, coarse enough for a day in 86,400 numbers. */
const PATTERN_SLOT_MS = 1000;

/** The next float in [0, 1) of a small seeded generator (mulberry32: 32-bit state, one multiply chain). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A generated rate trace, one slot per second:
 * - `steady`: `rps` throughout.
 * - `step`: `rps` until `atMs`, then `peakRps` (a load step).
 * - `diurnal`: a day-shaped cosine from `rps` (at t = 0, "midnight") to `peakRps` (at half the
 *   duration, "noon") and back.
 * - `bursty`: `rps`, with bursts of `peakRps` of random length (mean `burstMs`) at random times
 *   (mean gap `gapMs`), drawn from `seed`.
 * - `spike`: `rps`, and `peakRps` for `burstMs` from `atMs`.
 * - `on_off`: `peakRps` for `burstMs`, then 0 for `gapMs`, repeated (a batch job).
 * Example: step, rps 5, peakRps 50, atMs 60 000, 120 s → 60 slots of 5, then 60 of 50.
 */
export function generateTrace(p: PatternParams): RateTrace {
  const n = Math.max(1, Math.ceil(p.durationMs / PATTERN_SLOT_MS));
  const rates = new Float64Array(n);
  const random = seededRandom(p.seed);
  let burstUntil = -1;
  let nextBurst = p.pattern === 'bursty' ? -Math.log(1 - random()) * p.gapMs : Infinity;
  for (let i = 0; i < n; i++) {
    const t = i * PATTERN_SLOT_MS;
    switch (p.pattern) {
      case 'steady': rates[i] = p.rps; break;
      case 'step': rates[i] = t < p.atMs ? p.rps : p.peakRps; break;
      case 'diurnal': rates[i] = p.rps + (p.peakRps - p.rps) * (1 - Math.cos(2 * Math.PI * t / p.durationMs)) / 2; break;
      case 'spike': rates[i] = t >= p.atMs && t < p.atMs + p.burstMs ? p.peakRps : p.rps; break;
      case 'on_off': rates[i] = t % (p.burstMs + p.gapMs) < p.burstMs ? p.peakRps : 0; break;
      case 'bursty':
        if (t >= nextBurst) {
          burstUntil = t + Math.max(PATTERN_SLOT_MS, -Math.log(1 - random()) * p.burstMs);
          nextBurst = burstUntil - Math.log(1 - random()) * p.gapMs;
        }
        rates[i] = t < burstUntil ? p.peakRps : p.rps;
        break;
    }
  }
  return { kind: 'rates', slotMs: PATTERN_SLOT_MS, ratesPerS: rates, seed: p.seed, lengthMs: n * PATTERN_SLOT_MS };
}

/**
 * The bundled traces, as seeded patterns (the same requests on every run):
 * - `diurnal`: one day, 0.5 req/s at night to 15 req/s at noon (~670,000 requests).
 * - `bursty`: one hour at 2 req/s with bursts of 40 req/s, ~20 s long, every ~2 min on average.
 */
export const BUNDLED_TRACES: Readonly<Record<'diurnal' | 'bursty', Readonly<PatternParams>>> = Object.freeze({
  diurnal: Object.freeze({ pattern: 'diurnal', durationMs: 86_400_000, rps: 0.5, peakRps: 15, atMs: 0, burstMs: 0, gapMs: 0, seed: 24 }),
  bursty: Object.freeze({ pattern: 'bursty', durationMs: 3_600_000, rps: 2, peakRps: 40, atMs: 0, burstMs: 20_000, gapMs: 120_000, seed: 24 }),
});

/** Checks a pattern's numbers, naming the field (`where.peak_rps`) of the one that is out of range. */
export function checkPattern(p: PatternParams, where: string): void {
  const check = (field: string, v: number, lo: number, hi: number): void => {
    if (!(Number.isFinite(v) && v >= lo && v <= hi)) throw invalidParameter(`${where}.${field}`, v, `a number from ${lo} to ${hi}`);
  };
  check('duration_ms', p.durationMs, 1000, 7 * 86_400_000);
  check('rps', p.rps, 0, 100_000);
  check('peak_rps', p.peakRps, 0, 100_000);
  check('at_ms', p.atMs, 0, p.durationMs);
  check('burst_ms', p.burstMs, p.pattern === 'bursty' || p.pattern === 'on_off' ? 1000 : 0, p.durationMs);
  check('gap_ms', p.gapMs, p.pattern === 'bursty' || p.pattern === 'on_off' ? 1000 : 0, p.durationMs);
}
