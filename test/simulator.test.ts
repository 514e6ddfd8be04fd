/**
 * The simulator in virtual time: worked examples with replica counts computed by hand, policy
 * parity (the engine drives the autoscaler's own `record`/`decide`), trace parsing errors that
 * name the line, generated patterns, the closed form against request-by-request simulation, and
 * the recommendation against the references it is judged by.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { decide, newScalerState, record, scalingSpecFor } from '../src/autoscaler/index.js';
import { FerryError } from '../src/errors.js';
import {
  BUNDLED_TRACES, generateTrace, localTrace, parseSimulateRequest, parseTraceText, runSimulation, simulate, traceFromTimes, traceRequests,
  type ReplicaModel, type RequestTrace,
} from '../src/simulator/index.js';
import { ROOT } from './support/index.js';

const model = (over: Partial<ReplicaModel> = {}): ReplicaModel => ({
  serviceTime: { kind: 'fixed', ms: 1000 }, coldStartMs: [500], maxConcurrencyPerReplica: 64, bufferDepth: 1000, bufferTimeoutMs: 10_000, overheadMs: 0, ...over,
});

/** Requests every `everyMs` in [0, toMs), plus `extra`, as a trace of `lengthMs`. */
function evenly(toMs: number, everyMs: number, lengthMs: number, extra: number[] = []): RequestTrace {
  const times: number[] = [];
  for (let t = 0; t < toMs; t += everyMs) times.push(t);
  return { ...traceFromTimes([...times, ...extra]), lengthMs };
}

test('worked example: 8 req/s of 500 ms each at target 1 panics to 4 replicas at the first tick', () => {
  // In [0, 1000) requests arrive at 0, 125, …, 875 and each is held 500 ms: 5 × 500 + 375 + 250
  // + 125 = 3250 request·ms → the first sample is 3.25, ceil(3.25 / 1) = 4 ≥ 2 × 1 replica →
  // panic, 4 replicas (3 start, ready at 1500); every later sample is exactly 4 → 4 replicas.
  // Replica-seconds over the 10.875 s trace: 1 × 1 + 4 × 9.875 = 40.5.
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, maxProvisionedConcurrency: 64 }, { targetConcurrency: 1 });
  const r = simulate(evenly(10_000, 125, 10_875), spec, model({ serviceTime: { kind: 'fixed', ms: 500 } }), { timelinePoints: 11 });
  assert.deepEqual(r.timeline.map((p) => p.replicas), [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]);
  assert.deepEqual(r.timeline.slice(0, 3).map((p) => p.concurrency), [3.25, 4, 4]);
  assert.equal(r.replica_seconds, 40.5);
  assert.equal(r.replica_starts, 3);
  assert.equal(r.cold_starts, 0, 'one replica was ready all along');
  assert.equal(r.waited, 0);
  assert.equal(r.requests, 80);
  assert.equal(r.served, 80);
  assert.ok(Math.abs((r.p99_ms ?? 0) - 500) / 500 < 0.011, `p99 ${r.p99_ms} is the service time within the histogram's 1.1%`);
});

test('worked example: scale to zero after load stops, then a cold start for the next request', () => {
  // Target 4, scale to zero, default windows (stable 30 s, delay 10 s, grace 30 s). A request every
  // 250 ms, 1000 ms each, until 59 000: samples of 4 (1 replica). The sample at 60 000 still sees
  // 1.5 (the last requests finish at 59 250 … 59 750), so the last non-zero sample is at 60 000;
  // the stable window is all zeros from 90 000, the 10 s delay holds 1 through 98 000, and the
  // decision at 99 000 is 0. A request at 110 000 pokes at once: a replica starts, the request
  // waits its 500 ms cold start. Replica-seconds over 120 s: 99 + 10 = 109.
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: true }, {});
  const r = simulate(evenly(59_000, 250, 120_000, [110_000]), spec, model(), { timelinePoints: 120 });
  const replicas = r.timeline.map((p) => p.replicas);
  assert.deepEqual(replicas.slice(0, 98), Array(98).fill(1), 'one replica through the tick at 98 s');
  assert.deepEqual(replicas.slice(98, 109), Array(11).fill(0), 'zero from the tick at 99 s');
  assert.deepEqual(replicas.slice(109), Array(11).fill(1), 'the poke at 110 s starts one');
  assert.equal(r.replica_seconds, 109);
  assert.equal(r.cold_starts, 1);
  assert.equal(r.replica_starts, 1);
  assert.equal(r.waited, 1);
  assert.equal(r.max_wait_ms, 500);
  assert.equal(r.max_ms, 1500);
});

test('policy parity: the engine calls the autoscaler\'s record/decide, and its decisions are the policy\'s on the same samples', async () => {
  const source = await fsp.readFile(path.join(ROOT, 'src', 'simulator', 'engine.ts'), 'utf8');
  assert.match(source, /import \{[^}]*\bdecide\b[^}]*\brecord\b[^}]*\} from '\.\.\/autoscaler\/index\.js'/);
  assert.doesNotMatch(source, /function (decide|record|windowAverage)\b/, 'no copy of the policy');

  // Replay the samples the simulator reported through the policy directly: same replica counts.
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, maxProvisionedConcurrency: 64 }, { targetConcurrency: 2, stableWindowMs: 10_000, scaleDownDelayMs: 0 });
  const trace = generateTrace({ pattern: 'spike', durationMs: 120_000, rps: 20, peakRps: 200, atMs: 30_000, burstMs: 30_000, gapMs: 0, seed: 7 });
  const r = simulate(trace, spec, model({ serviceTime: { kind: 'fixed', ms: 50 }, coldStartMs: [0] }), { timelinePoints: 120, exact: true });
  const state = newScalerState(spec);
  let desired = 1;
  const expected: number[] = [];
  for (const [i, p] of r.timeline.entries()) {
    const now = (i + 1) * 1000;
    record(state, now, p.concurrency);
    const d = decide(spec, state, { readyReplicas: desired, startingReplicas: 0 }, now);
    if (d.valid) desired = d.desiredReplicas;
    expected.push(desired);
  }
  assert.deepEqual(r.timeline.map((p) => p.replicas), expected);
  assert.ok(Math.max(...expected) >= 5, 'the spike scaled up');
  assert.equal(expected.at(-1), 1, 'and back down');
});

test('trace files: CSV and JSON Lines, seconds, ms and ISO times; errors are 400s naming the line', () => {
  const csv = parseTraceText('timestamp,duration_ms\n1733443200000,12\n# a comment\n1733443200500,8\n\n1733443201000,10\n', 'csv');
  assert.deepEqual([...csv.arrivalsMs], [0, 500, 1000]);
  assert.deepEqual([...(csv.durationsMs ?? [])], [12, 8, 10]);
  assert.equal(csv.lengthMs, 2000);
  const seconds = parseTraceText('1733443201.5\n1733443200\n', 'csv');
  assert.deepEqual([...seconds.arrivalsMs], [0, 1500], 'seconds, sorted');
  const jsonl = parseTraceText('{"timestamp":"2026-12-06T00:00:00Z"}\n{"timestamp_ms":1796515200250}\n', 'jsonl');
  assert.deepEqual([...jsonl.arrivalsMs], [0, 250]);
  assert.equal(jsonl.durationsMs, undefined);

  const bad = (text: string, format: 'csv' | 'jsonl', message: RegExp): void => {
    assert.throws(() => parseTraceText(text, format), (err: unknown) => err instanceof FerryError && err.status === 400 && message.test(err.message), message.source);
  };
  bad('1733443200000\n1733443200500\nsoon\n', 'csv', /^Trace line 3: expected a timestamp .*"soon"/);
  bad('timestamp,duration_ms\n1733443200000,12\n1733443200500,-1\n', 'csv', /^Trace line 3: expected duration_ms .*"-1"/);
  bad('1733443200000,5\n1733443200500\n', 'csv', /^Trace line 2: has no duration_ms/);
  bad('when,who\n1,2\n', 'csv', /^Trace line 1: a header must name a 'timestamp' column/);
  bad('{"timestamp":1}\n[1]\n', 'jsonl', /^Trace line 2: expected a JSON object/);
  bad('{"timestamp":1}\n{"timestamp":1,\n', 'jsonl', /^Trace line 2: expected a JSON object/);
  bad('\n# nothing\n', 'csv', /^Trace has no requests/);
});

test('patterns: rates per second as specified, seeded', () => {
  const step = generateTrace({ pattern: 'step', durationMs: 120_000, rps: 5, peakRps: 50, atMs: 60_000, burstMs: 0, gapMs: 0, seed: 1 });
  assert.deepEqual([...step.ratesPerS.slice(58, 62)], [5, 5, 50, 50]);
  assert.equal(traceRequests(step), 60 * 5 + 60 * 50);
  const onOff = generateTrace({ pattern: 'on_off', durationMs: 10_000, rps: 0, peakRps: 10, atMs: 0, burstMs: 2000, gapMs: 3000, seed: 1 });
  assert.deepEqual([...onOff.ratesPerS], [10, 10, 0, 0, 0, 10, 10, 0, 0, 0]);
  const diurnal = generateTrace(BUNDLED_TRACES.diurnal);
  assert.equal(diurnal.ratesPerS[0], 0.5);
  assert.equal(diurnal.ratesPerS[43_200], 15, 'peak at noon');
  const a = generateTrace(BUNDLED_TRACES.bursty);
  const b = generateTrace(BUNDLED_TRACES.bursty);
  assert.deepEqual(a.ratesPerS, b.ratesPerS, 'the same seed, the same trace');
  const bursts = [...a.ratesPerS].filter((r) => r === 40).length;
  assert.ok(bursts > 200 && bursts < 1200, `bursts cover ${bursts} of 3600 s`);
});

test('the closed form for seconds where no request can wait agrees with request-by-request simulation', () => {
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, maxProvisionedConcurrency: 400 }, { targetConcurrency: 2 });
  const trace = generateTrace({ ...BUNDLED_TRACES.bursty, durationMs: 900_000 });
  const m = model({ serviceTime: { kind: 'histogram', boundsMs: [10, 20, 50], counts: [10, 80, 10, 0] }, maxConcurrencyPerReplica: 8, coldStartMs: [1000] });
  const fast = simulate(trace, spec, m, { timelinePoints: 0 });
  const exact = simulate(trace, spec, m, { timelinePoints: 0, exact: true });
  assert.ok(Math.abs(fast.replica_seconds - exact.replica_seconds) / exact.replica_seconds < 0.05, `${fast.replica_seconds} vs ${exact.replica_seconds}`);
  assert.ok(Math.abs((fast.p99_ms ?? 0) - (exact.p99_ms ?? 0)) / (exact.p99_ms ?? 1) < 0.1, `${fast.p99_ms} vs ${exact.p99_ms}`);
  assert.ok(Math.abs(fast.requests - exact.requests) / exact.requests < 0.02);
});

test('the buffer refuses when full (429) and after its deadline (503)', () => {
  // No scaling room: 1 replica max, 1 request at a time, 1 s each, 5 arrive at once.
  const spec = scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, maxProvisionedConcurrency: 1 }, { targetConcurrency: 1 });
  const r = simulate(traceFromTimes([0, 0, 0, 0, 0]), spec, model({ maxConcurrencyPerReplica: 1, bufferDepth: 3, bufferTimeoutMs: 1500 }));
  assert.equal(r.refused_buffer_full, 1, 'the fifth finds 3 waiting');
  assert.equal(r.served, 2, 'the first at once, the second after 1 s');
  assert.equal(r.refused_deadline, 2, 'the others wait past 1.5 s');
});

test('recommendation: the cheapest setting meeting the p99 target, against static provisioning for the peak and Knative defaults', () => {
  const req = parseSimulateRequest({
    trace: { source: 'pattern', pattern: 'spike', duration_ms: 600_000, rps: 2, peak_rps: 200, at_ms: 200_000, burst_ms: 120_000 },
    candidate: { max_provisioned_concurrency: 64 },
    replica: { service_time_ms: 100, cold_start_ms: 500, max_concurrency_per_replica: 4 },
    price_per_replica_hour: 0.36,
    recommend: { target_p99_ms: 700 },
  });
  const trace = localTrace(req.trace);
  assert.ok(trace !== undefined);
  const answer = runSimulation(req, { trace, current: undefined, measuredServiceTime: undefined, measuredColdStartsMs: [], gateway: { maxConcurrencyPerReplica: 64, maxQueued: 1000, queueTimeoutMs: 10_000 } });
  assert.equal(answer.current, null);
  assert.equal(answer.replica_model.service_time_source, 'request');
  const rec = answer.recommendation;
  assert.ok(rec?.result && rec.setting && rec.static_peak, JSON.stringify(rec));
  assert.ok((rec.result.p99_ms ?? Infinity) <= 700);
  assert.equal(rec.result.cost, Math.round(rec.result.replica_seconds / 3600 * 0.36 * 1000) / 1000);
  assert.ok(rec.result.replica_seconds <= rec.static_peak.result.replica_seconds, 'never dearer than static');
  assert.ok(rec.static_peak.replicas >= 5 && rec.static_peak.replicas <= 12, `static ${rec.static_peak.replicas}`);
  assert.ok(rec.savings_vs_static_peak !== null && rec.savings_vs_static_peak > 0.4, `savings ${rec.savings_vs_static_peak}`);
  assert.ok(rec.feasible >= 1 && rec.evaluated === 72, `${rec.feasible}/${rec.evaluated} (targets above 4 per replica skipped)`);
  assert.ok(rec.knative_defaults.replica_seconds > 0);
});

test('request errors name the field', () => {
  const bad = (body: unknown, message: RegExp): void => {
    assert.throws(() => {
      const req = parseSimulateRequest(body);
      localTrace(req.trace);
      runSimulation(req, { trace: localTrace(req.trace) ?? traceFromTimes([0]), current: undefined, measuredServiceTime: undefined, measuredColdStartsMs: [], gateway: { maxConcurrencyPerReplica: 64, maxQueued: 1000, queueTimeoutMs: 10_000 } });
    }, (err: unknown) => err instanceof FerryError && err.status === 400 && message.test(err.message), message.source);
  };
  bad({}, /'trace'/);
  bad({ trace: { source: 'nope' } }, /'trace.source'/);
  bad({ trace: { source: 'pattern', pattern: 'steady', rps: -1 } }, /'trace.rps'/);
  bad({ trace: { source: 'bundled', name: 'bursty' }, candidate: { autoscaling: { target_concurrency: 0 } } }, /'candidate.autoscaling.target_concurrency'/);
  bad({ trace: { source: 'bundled', name: 'bursty' }, candidate: { workload_size: 'Huge' } }, /'candidate.workload_size'/);
  bad({ trace: { source: 'bundled', name: 'bursty' }, price_per_replica_hour: { GPU_SMALL: 1 } }, /'price_per_replica_hour': expected a price for "CPU\/Small" or "CPU"/);
  bad({ trace: { source: 'file', data: '1\nx\n' } }, /^Trace line 2:/);
  bad({ trace: { source: 'pattern', pattern: 'steady', rps: 100_000, duration_ms: 7 * 86_400_000 } }, /'trace': expected at most 172800000 requests/);
});
