/**
 * The simulator: replays a request trace through the REAL autoscaling policy
 * (`record`/`decide` of src/autoscaler, the same functions the controller calls) in virtual time,
 * against a model of the replicas and of the gateway's activator buffer. Discrete events, one per
 * arrival, completion, replica start, buffer deadline and autoscaler tick, so a simulated second
 * costs what its requests cost, not wall time.
 *
 * The loop is the controller's scaling loop (src/control/scaling.ts), step for step:
 * - every 1 s tick: sample the time-weighted average of the requests the gateway holds (waiting
 *   or on a replica) since the previous sample; with no replica at all, the larger of that and
 *   the requests held right now; `record`, then `decide` with the ready and starting counts;
 * - a poke: a request that has to wait while the entity has no replica (ready or starting)
 *   samples and decides at once;
 * - a decision that differs from the current desired count converges on it: missing replicas
 *   start (ready after the cold-start time), surplus READY replicas are retired; a starting
 *   replica is never stopped.
 * The gateway (src/gateway/traffic.ts): a replica carries at most `maxConcurrencyPerReplica`
 * requests; a request that finds no room waits in a FIFO buffer of `bufferDepth` (full → 429)
 * for at most `bufferTimeoutMs` (then 503).
 *
 * Where it differs from the real thing (each difference is small next to a cold start):
 * - the replicas form one pool: a request gets room if any replica has room (the gateway picks
 *   two at random and falls back to the least loaded one with room, so it also finds room when
 *   any has it); a retired replica's requests finish but its room is gone at once;
 * - service time does not depend on load: a replica is as fast with 64 requests as with one
 *   (true while the model is not CPU-bound; batching is in the measured model time);
 * - a replica starts in exactly the cold-start time (or a draw from the measured ones), never fails;
 * - no network or gateway time unless `overheadMs` is given.
 */
import { decide, newScalerState, record, type ScalingSpec } from '../autoscaler/index.js';
import type { ServiceTime, SimulationResult, TimelinePoint } from '../api/index.js';
import { seededRandom, type Trace } from './trace.js';

export type { ServiceTime, SimulationResult, TimelinePoint } from '../api/index.js';

/** The autoscaler's tick (the controller samples and decides once a second). */
export const TICK_MS = 1000;


/** The replicas and the gateway in front of them. */
export interface ReplicaModel {
  serviceTime: ServiceTime;
  /** Time from "start a replica" to ready; several values are drawn from uniformly (the entity's measured cold starts). */
  coldStartMs: readonly number[];
  maxConcurrencyPerReplica: number;
  bufferDepth: number;
  bufferTimeoutMs: number;
  /** Added to every request's latency (gateway and network time). */
  overheadMs: number;
}

export interface SimulationOptions {
  /** Replicas ready at t = 0; default: what the controller starts with, max(minReplicas, 1). */
  initialReplicas?: number;
  /** Price of one replica for one hour (any currency); the result's `cost` is replica-hours × this. */
  pricePerReplicaHour?: number;
  /** Points of the timeline (default 500); 0 leaves it out. */
  timelinePoints?: number;
  /** Seeds the service-time and cold-start draws. */
  seed?: number;
  /** Simulate every request, also the seconds the closed form would sum (see {@link simulate}). */
  exact?: boolean;
}


// ---------------------------------------------------------------------------------------------
// Latency histogram: 32 buckets per doubling from 0.01 ms, so a percentile (the geometric middle
// of its bucket) is within 2^(1/64) ≈ 1.1% of the exact sample percentile. 27 doublings reach
// ~22 min, past any request timeout.
// ---------------------------------------------------------------------------------------------

const LAT_MIN_MS = 0.01;
const LAT_PER_DOUBLING = 32;
const LAT_BUCKETS = 27 * LAT_PER_DOUBLING;

function latencyBucket(ms: number): number {
  if (!(ms > LAT_MIN_MS)) return 0;
  const b = Math.floor(Math.log2(ms / LAT_MIN_MS) * LAT_PER_DOUBLING);
  return b < LAT_BUCKETS ? b : LAT_BUCKETS - 1;
}

/** The nearest-rank `q` percentile of `n` samples in `hist` (offset `at`, LAT_BUCKETS long), in ms. */
function percentile(hist: Float64Array, at: number, n: number, q: number): number | null {
  if (n === 0) return null;
  const rank = Math.max(1, Math.ceil(q * n));
  let seen = 0;
  for (let i = 0; i < LAT_BUCKETS; i++) {
    seen += hist[at + i] ?? 0;
    if (seen >= rank) return i === 0 ? LAT_MIN_MS : LAT_MIN_MS * 2 ** ((i + 0.5) / LAT_PER_DOUBLING);
  }
  return null; // unreachable: the buckets hold n samples
}

// ---------------------------------------------------------------------------------------------
// Small containers without per-event allocation.
// ---------------------------------------------------------------------------------------------

/** A binary min-heap of completion times. */
class TimeHeap {
  private a = new Float64Array(64);
  size = 0;

  get min(): number {
    return this.size === 0 ? Infinity : this.a[0] as number;
  }

  push(v: number): void {
    if (this.size === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    const a = this.a;
    let i = this.size++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pv = a[p] as number;
      if (pv <= v) break;
      a[i] = pv;
      i = p;
    }
    a[i] = v;
  }

  pop(): void {
    const a = this.a;
    const last = a[--this.size] as number;
    const n = this.size;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && (a[c + 1] as number) < (a[c] as number)) c++;
      if ((a[c] as number) >= last) break;
      a[i] = a[c] as number;
      i = c;
    }
    if (n > 0) a[i] = last;
  }
}

/** A FIFO of waiting requests: arrival time and service time. */
class WaitQueue {
  private arrival = new Float64Array(64);
  private service = new Float64Array(64);
  private head = 0;
  size = 0;

  get headArrival(): number {
    return this.arrival[this.head] as number;
  }

  get headService(): number {
    return this.service[this.head] as number;
  }

  push(arrivalMs: number, serviceMs: number): void {
    const cap = this.arrival.length;
    if (this.size === cap) {
      const a = new Float64Array(cap * 2);
      const s = new Float64Array(cap * 2);
      for (let i = 0; i < this.size; i++) {
        a[i] = this.arrival[(this.head + i) % cap] as number;
        s[i] = this.service[(this.head + i) % cap] as number;
      }
      this.arrival = a;
      this.service = s;
      this.head = 0;
    }
    const i = (this.head + this.size) % this.arrival.length;
    this.arrival[i] = arrivalMs;
    this.service[i] = serviceMs;
    this.size++;
  }

  shift(): void {
    this.head = (this.head + 1) % this.arrival.length;
    this.size--;
  }
}

// ---------------------------------------------------------------------------------------------
// Arrivals
// ---------------------------------------------------------------------------------------------

/** Arrival times of a trace, one at a time: the requests as recorded, or a Poisson process per rate slot. */
interface Arrivals {
  next(): number;
  /** The recorded duration of the request `next` returned last; NaN when the trace has none. */
  duration(): number;
  /**
   * Rate traces: the rate (req/s) over [fromMs, fromMs + TICK_MS) when it is one constant rate
   * there, else undefined. Request traces: always undefined.
   */
  steadyRate(fromMs: number): number | undefined;
  /** Rate traces: forget the pending arrival and continue at `ms` (exact: a Poisson process has no memory). */
  skipTo(ms: number): void;
}

function arrivalsOf(trace: Trace): Arrivals {
  if (trace.kind === 'requests') {
    let i = -1;
    const { arrivalsMs, durationsMs } = trace;
    return {
      next: () => (++i < arrivalsMs.length ? arrivalsMs[i] as number : Infinity),
      duration: () => (durationsMs === undefined ? NaN : durationsMs[i] as number),
      steadyRate: () => undefined,
      skipTo: () => undefined,
    };
  }
  const { slotMs, ratesPerS } = trace;
  const random = seededRandom(trace.seed);
  let slot = 0;
  let t = 0;
  return {
    // Exponential gaps at the slot's rate; a gap that crosses the slot's end restarts at the end
    // with the next slot's rate.
    next: () => {
      for (;;) {
        if (slot >= ratesPerS.length) return Infinity;
        const end = (slot + 1) * slotMs;
        const rate = (ratesPerS[slot] as number) / 1000;
        if (rate > 0) {
          const gap = -Math.log(1 - random()) / rate;
          if (t + gap < end) return (t += gap);
        }
        t = end;
        slot++;
      }
    },
    duration: () => NaN,
    steadyRate: (fromMs) => {
      const s = Math.floor(fromMs / slotMs);
      return fromMs % slotMs === 0 && slotMs % TICK_MS === 0 && s < ratesPerS.length ? ratesPerS[s] : undefined;
    },
    skipTo: (ms) => {
      t = ms;
      slot = Math.floor(ms / slotMs);
    },
  };
}

/** A Poisson-distributed count with mean `mean` (Knuth's product method when small, a rounded normal when large). */
function poisson(mean: number, random: () => number): number {
  if (mean <= 0) return 0;
  if (mean < 30) {
    const limit = Math.exp(-mean);
    let k = 0;
    for (let p = random(); p > limit; p *= random()) k++;
    return k;
  }
  const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  return Math.max(0, Math.round(mean + Math.sqrt(mean) * z));
}

/** Mean (ms) of a service time. */
function meanService(s: ServiceTime): number {
  if (s.kind === 'fixed') return s.ms;
  return s.meanMs ?? bucketMean(s);
}

/** The factor that gives a histogram's draws its measured mean (1 without one). */
function histogramScale(s: Extract<ServiceTime, { kind: 'histogram' }>): number {
  const m = bucketMean(s);
  return s.meanMs === undefined || m <= 0 ? 1 : s.meanMs / m;
}

/** Mean of uniform draws within a histogram's buckets. */
function bucketMean(s: Extract<ServiceTime, { kind: 'histogram' }>): number {
  const total = s.counts.reduce((a, c) => a + c, 0);
  const last = s.boundsMs[s.boundsMs.length - 1] ?? 0;
  return s.counts.reduce((sum, c, i) => {
    const hi = s.boundsMs[i] ?? last;
    const lo = i === 0 ? 0 : s.boundsMs[i - 1] ?? last;
    return sum + (c / total) * (lo + hi) / 2;
  }, 0);
}

/** The share of requests in each latency bucket when latency = service time + overhead (nobody waits). */
function latencyShares(s: ServiceTime, overheadMs: number): Array<[bucket: number, share: number]> {
  const shares = new Map<number, number>();
  const add = (ms: number, w: number): void => {
    const b = latencyBucket(ms);
    shares.set(b, (shares.get(b) ?? 0) + w);
  };
  if (s.kind === 'fixed') {
    add(s.ms + overheadMs, 1);
  } else {
    // Uniform within each bucket, as the sampler draws: 64 evenly spaced points per bucket.
    const total = s.counts.reduce((a, c) => a + c, 0);
    const last = s.boundsMs[s.boundsMs.length - 1] ?? 0;
    const scale = histogramScale(s);
    s.counts.forEach((c, i) => {
      const hi = s.boundsMs[i] ?? last;
      const lo = i === 0 ? 0 : s.boundsMs[i - 1] ?? last;
      for (let j = 0; j < 64; j++) add((lo + (hi - lo) * (j + 0.5) / 64) * scale + overheadMs, c / total / 64);
    });
  }
  return [...shares];
}

/** A service-time sampler. */
function serviceSampler(s: ServiceTime, random: () => number): () => number {
  if (s.kind === 'fixed') return () => s.ms;
  const total = s.counts.reduce((a, c) => a + c, 0);
  const cum = s.counts.map(((sum) => (c: number) => (sum += c / total))(0));
  const last = s.boundsMs[s.boundsMs.length - 1] ?? 0;
  const scale = histogramScale(s);
  return () => {
    const u = random();
    let i = 0;
    while (i < cum.length - 1 && (cum[i] as number) <= u) i++;
    // Uniform within the bucket; the +Inf bucket is drawn as its lower bound.
    const hi = s.boundsMs[i] ?? last;
    const lo = i === 0 ? 0 : s.boundsMs[i - 1] ?? last;
    return (lo + (hi - lo) * random()) * scale;
  };
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/**
 * Replays `trace` against `spec` (a compiled scaling spec: `scalingSpecFor`) and `model`.
 * Deterministic: the same inputs and seed give the same result.
 *
 * Worked example (checked by test/simulator.test.ts): target 4, no scale to zero, defaults
 * otherwise, 10 ms per request, a replica ready 2 s after its start, 1 replica at t = 0; a load
 * step from 100 req/s (concurrency 1) to 1,000 req/s (concurrency 10) at t = 60 s. The panic
 * window sees the step first: ceil(10 / 4) = 3 ≥ 2 × 1 → panic, so the replicas go 1 → 3 within
 * the first ticks of the step and never above 3.
 */
export function simulate(trace: Trace, spec: ScalingSpec, model: ReplicaModel, opts: SimulationOptions = {}): SimulationResult {
  const random = seededRandom((opts.seed ?? 1) ^ 0x5eed);
  const drawService = serviceSampler(model.serviceTime, random);
  const coldStarts = model.coldStartMs.length > 0 ? model.coldStartMs : [0];
  const drawColdStart = (): number => coldStarts[Math.floor(random() * coldStarts.length)] as number;
  const perReplica = model.maxConcurrencyPerReplica;
  const lengthMs = trace.lengthMs;

  // Timeline buckets: ticks per point, and one latency histogram per point.
  const ticks = Math.max(1, Math.ceil(lengthMs / TICK_MS));
  const points = Math.min(opts.timelinePoints ?? 500, ticks);
  const ticksPerPoint = points === 0 ? ticks : Math.ceil(ticks / points);
  const nPoints = points === 0 ? 0 : Math.ceil(ticks / ticksPerPoint);
  const pointMs = ticksPerPoint * TICK_MS;
  const pointHist = new Float64Array(nPoints * LAT_BUCKETS);
  const pointServed = new Float64Array(nPoints);
  const pointArrivals = new Float64Array(nPoints);
  const pointMaxReplicas = new Float64Array(nPoints);
  const pointMinReady = new Float64Array(nPoints).fill(Infinity);
  const pointConcurrency = new Float64Array(nPoints);
  const pointSamples = new Float64Array(nPoints);
  const latency = new Float64Array(LAT_BUCKETS);

  const scaler = newScalerState(spec);
  let ready = Math.max(0, Math.min(spec.maxReplicas, opts.initialReplicas ?? Math.max(spec.minReplicas, 1)));
  let desired = ready;
  /** Ready times of starting replicas, ascending. */
  const starting: number[] = [];
  let capacity = ready * perReplica;
  let busy = 0;
  const queue = new WaitQueue();
  const completions = new TimeHeap();

  // Time-weighted concurrency, as EntityTraffic.takeAverageConcurrency: ∫ held dt since the last sample.
  let held = 0;
  let area = 0;
  let lastChange = 0;
  let windowStart = 0;
  const accumulate = (now: number): void => {
    area += held * (now - lastChange);
    lastChange = now;
  };
  const takeAverage = (now: number): number => {
    accumulate(now);
    const span = now - windowStart;
    const avg = span > 0 ? area / span : held;
    area = 0;
    windowStart = now;
    return avg;
  };

  // Replica-time, over the trace's length only.
  let replicaMs = 0;
  let lastCount = 0;
  const countReplicas = (now: number): void => {
    const until = Math.min(now, lengthMs);
    if (until > lastCount) replicaMs += (ready + starting.length) * (until - lastCount);
    lastCount = Math.max(lastCount, until);
  };

  let requests = 0;
  let served = 0;
  let refusedFull = 0;
  let refusedDeadline = 0;
  let waited = 0;
  let waitSum = 0;
  let waitMax = 0;
  let latMax = 0;
  let starts = 0;
  let coldStartCount = 0;
  let maxReplicas = ready;
  let scaleEvents = 0;

  const observe = (arrivalMs: number, ms: number): void => {
    served++;
    const b = latencyBucket(ms);
    latency[b] = (latency[b] as number) + 1;
    if (ms > latMax) latMax = ms;
    if (nPoints > 0) {
      const p = Math.min(nPoints - 1, Math.floor(arrivalMs / pointMs));
      const at = p * LAT_BUCKETS + b;
      pointHist[at] = (pointHist[at] as number) + 1;
      pointServed[p] = (pointServed[p] as number) + 1;
    }
  };

  /** Hands free room to waiting requests, oldest first. */
  const dispatch = (now: number): void => {
    while (queue.size > 0 && busy < capacity) {
      const arrival = queue.headArrival;
      const service = queue.headService;
      queue.shift();
      const wait = now - arrival;
      waited++;
      waitSum += wait;
      if (wait > waitMax) waitMax = wait;
      busy++;
      completions.push(now + service);
      observe(arrival, wait + service + model.overheadMs);
    }
  };

  /** The controller's scaleEntity + scaleTo. */
  const scaleEntity = (now: number, poke: boolean): void => {
    const sample = poke ? Math.max(held, takeAverage(now)) : takeAverage(now);
    record(scaler, now, sample);
    const decision = decide(spec, scaler, { readyReplicas: ready, startingReplicas: starting.length }, now);
    if (!poke && nPoints > 0) {
      const p = Math.min(nPoints - 1, Math.floor((now - TICK_MS) / pointMs));
      pointConcurrency[p] = (pointConcurrency[p] as number) + sample;
      pointSamples[p] = (pointSamples[p] as number) + 1;
    }
    if (decision.valid && decision.desiredReplicas !== desired) {
      scaleEvents++;
      desired = decision.desiredReplicas;
      countReplicas(now);
      const missing = desired - (ready + starting.length);
      if (missing > 0) {
        if (ready === 0) coldStartCount++;
        for (let i = 0; i < missing; i++) {
          const at = now + drawColdStart();
          let j = starting.length;
          while (j > 0 && (starting[j - 1] as number) > at) j--;
          starting.splice(j, 0, at);
          starts++;
        }
        maxReplicas = Math.max(maxReplicas, ready + starting.length);
      } else {
        const surplus = Math.min(ready, ready + starting.length - desired);
        ready -= surplus;
        capacity -= surplus * perReplica;
      }
    }
  };

  let nextTick = TICK_MS;
  const arrivals = arrivalsOf(trace);
  let nextArrival = arrivals.next();

  /**
   * The closed form for a second in which no request can wait: with c = the pool's room and
   * m = the requests in flight (offered load λ·E[S] plus those on replicas now), an M/G/∞ pool
   * holds a Poisson(m) number of requests, so when c ≥ m + 4·√m + 4 the chance that a request
   * finds the pool full is below 10⁻⁴ (e.g. m = 20, c = 42: 10⁻⁵), a hundred times below what a
   * p99 can see, and every request's latency is taken to be its service time. The second's arrivals
   * are then counted (a Poisson draw), their latencies added to the histograms by share, and
   * their time-weighted concurrency (n·E[S] / 1 s, Little's law) added to the policy's sample;
   * the trace continues at the next second. Only rate traces with constant rate over the second
   * qualify; the others (and `exact`) are simulated request by request.
   */
  const meanServiceMs = meanService(model.serviceTime);
  const shares = latencyShares(model.serviceTime, model.overheadMs);
  const maxLatencyMs = (model.serviceTime.kind === 'fixed' ? model.serviceTime.ms : Math.max(0, ...model.serviceTime.boundsMs) * histogramScale(model.serviceTime)) + model.overheadMs;
  const sumSecond = (from: number): void => {
    const rate = arrivals.steadyRate(from);
    if (rate === undefined || queue.size > 0 || nextArrival < from) return;
    const m = rate * meanServiceMs / 1000 + busy;
    if (capacity < m + 4 * Math.sqrt(m) + 4) return;
    const n = poisson(rate * TICK_MS / 1000, random);
    arrivals.skipTo(from + TICK_MS);
    nextArrival = arrivals.next();
    if (n === 0) return;
    requests += n;
    served += n;
    area += n * meanServiceMs;
    if (maxLatencyMs > latMax) latMax = maxLatencyMs;
    const p = nPoints > 0 ? Math.min(nPoints - 1, Math.floor(from / pointMs)) : -1;
    for (const [b, share] of shares) {
      latency[b] = (latency[b] as number) + n * share;
      if (p >= 0) pointHist[p * LAT_BUCKETS + b] = (pointHist[p * LAT_BUCKETS + b] as number) + n * share;
    }
    if (p >= 0) {
      pointServed[p] = (pointServed[p] as number) + n;
      pointArrivals[p] = (pointArrivals[p] as number) + n;
    }
  };
  for (;;) {
    const nextCompletion = completions.min;
    const nextReady = starting.length > 0 ? starting[0] as number : Infinity;
    const nextDeadline = queue.size > 0 ? queue.headArrival + model.bufferTimeoutMs : Infinity;
    const tickDue = nextTick <= lengthMs ? nextTick : Infinity;
    if (nextCompletion <= nextReady && nextCompletion <= nextDeadline && nextCompletion <= nextArrival && nextCompletion <= tickDue) {
      if (nextCompletion === Infinity) break;
      const now = nextCompletion;
      completions.pop();
      accumulate(now);
      busy--;
      held--;
      dispatch(now);
    } else if (nextReady <= nextDeadline && nextReady <= nextArrival && nextReady <= tickDue) {
      const now = nextReady;
      starting.shift();
      ready++;
      capacity += perReplica;
      dispatch(now);
    } else if (nextDeadline <= nextArrival && nextDeadline <= tickDue) {
      accumulate(nextDeadline);
      queue.shift();
      held--;
      refusedDeadline++;
    } else if (nextArrival <= tickDue) {
      const now = nextArrival;
      const recorded = arrivals.duration();
      const service = Number.isNaN(recorded) ? drawService() : recorded;
      nextArrival = arrivals.next();
      requests++;
      if (nPoints > 0) {
        const p = Math.min(nPoints - 1, Math.floor(now / pointMs));
        pointArrivals[p] = (pointArrivals[p] as number) + 1;
      }
      if (busy < capacity && queue.size === 0) {
        accumulate(now);
        held++;
        busy++;
        completions.push(now + service);
        observe(now, service + model.overheadMs);
      } else if (queue.size >= model.bufferDepth) {
        refusedFull++;
      } else {
        accumulate(now);
        held++;
        queue.push(now, service);
        if (ready + starting.length === 0) scaleEntity(now, true);
      }
    } else {
      const now = nextTick;
      nextTick += TICK_MS;
      scaleEntity(now, false);
      if (nPoints > 0) {
        const p = Math.min(nPoints - 1, Math.floor((now - TICK_MS) / pointMs));
        pointMaxReplicas[p] = Math.max(pointMaxReplicas[p] as number, ready + starting.length);
        pointMinReady[p] = Math.min(pointMinReady[p] as number, ready);
      }
      if (opts.exact !== true && now + TICK_MS <= lengthMs) sumSecond(now);
    }
  }
  countReplicas(lengthMs);

  const hours = lengthMs / 3_600_000;
  const replicaSeconds = replicaMs / 1000;
  const timeline: TimelinePoint[] = [];
  for (let p = 0; p < nPoints; p++) {
    const samples = pointSamples[p] as number;
    // A span without a tick (the trace's last partial second) keeps the counts of the one before.
    const ticked = Number.isFinite(pointMinReady[p]);
    const before = timeline[p - 1];
    timeline.push({
      t_s: (p * pointMs) / 1000,
      replicas: ticked ? pointMaxReplicas[p] as number : before?.replicas ?? ready + starting.length,
      ready: ticked ? pointMinReady[p] as number : before?.ready ?? ready,
      concurrency: samples > 0 ? round((pointConcurrency[p] as number) / samples) : 0,
      rps: round((pointArrivals[p] as number) / (Math.min(pointMs, lengthMs - p * pointMs) / 1000)),
      p99_ms: roundOrNull(percentile(pointHist, p * LAT_BUCKETS, pointServed[p] as number, 0.99)),
    });
  }
  return {
    requests,
    served,
    refused_buffer_full: refusedFull,
    refused_deadline: refusedDeadline,
    waited,
    mean_wait_ms: round(waited === 0 ? 0 : waitSum / waited),
    max_wait_ms: round(waitMax),
    p50_ms: roundOrNull(percentile(latency, 0, served, 0.5)),
    p99_ms: roundOrNull(percentile(latency, 0, served, 0.99)),
    max_ms: served === 0 ? null : round(latMax),
    replica_seconds: round(replicaSeconds),
    cost: opts.pricePerReplicaHour === undefined ? null : round((replicaSeconds / 3600) * opts.pricePerReplicaHour),
    replica_starts: starts,
    cold_starts: coldStartCount,
    cold_starts_per_hour: round(hours > 0 ? coldStartCount / hours : 0),
    max_replicas: maxReplicas,
    scale_events: scaleEvents,
    duration_s: lengthMs / 1000,
    interval_s: pointMs / 1000,
    timeline,
  };
}

/** Three decimals are enough for ms and replica-seconds, and keep answers short. */
function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

function roundOrNull(v: number | null): number | null {
  return v === null ? null : round(v);
}
