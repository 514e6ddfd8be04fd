/**
 * The scaling policy on virtual time: a loop advances nowMs by 1000, records a sample and asks for
 * a decision; no sleeps. Each numeric example in the TSDoc of `decide` and `scalingSpecFor` is
 * checked here (the test names say which step).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DEFAULT_SCALING_TUNABLES,
  decide,
  newScalerState,
  record,
  scalingSpecFor,
  type Decision,
  type ScalableEntity,
  type ScalerState,
  type ScalingSpec,
} from '../src/autoscaler/index.js';
import type { ServedEntityConfig } from '../src/control/index.js';
import { FerryError } from '../src/errors.js';

const MEDIUM: ScalableEntity = { workloadSize: 'Medium', scaleToZeroEnabled: false };
/** Small with scale-to-zero: 0..1 replicas at target 4. */
const SMALL_ZERO: ScalableEntity = { workloadSize: 'Small', scaleToZeroEnabled: true };
/** Room to grow: 0..100 replicas at target 4. */
const WIDE: ScalableEntity = { workloadSize: 'Large', scaleToZeroEnabled: true, maxProvisionedConcurrency: 400 };

/**
 * A caller on virtual time. `follow` says what its replicas do after each decision: 'instant' makes
 * ready = desired (starts and stops are immediate), 'starting' puts every new replica in starting
 * for good (a replica stuck loading), 'fixed' leaves the counts alone.
 */
class Sim {
  readonly state: ScalerState;
  nowMs: number;
  ready: number;
  starting = 0;
  readonly log: Array<{ t: number; d: Decision }> = [];

  constructor(readonly spec: ScalingSpec, ready: number, startMs = 0, readonly follow: 'instant' | 'starting' | 'fixed' = 'instant') {
    this.state = newScalerState(spec);
    this.ready = ready;
    this.nowMs = startMs - 1000;
  }

  /** One second: record `load`, decide, let the replicas follow. */
  tick(load: number): Decision {
    this.nowMs += 1000;
    record(this.state, this.nowMs, load);
    const d = decide(this.spec, this.state, { readyReplicas: this.ready, startingReplicas: this.starting }, this.nowMs);
    this.log.push({ t: this.nowMs, d });
    if (d.valid && this.follow === 'instant') this.ready = d.desiredReplicas;
    if (d.valid && this.follow === 'starting' && d.desiredReplicas > this.ready + this.starting) this.starting = d.desiredReplicas - this.ready;
    return d;
  }

  /** `n` ticks at `load`; returns their decisions. */
  run(n: number, load: number): Decision[] {
    return Array.from({ length: n }, () => this.tick(load));
  }

  /** Time of the first logged decision at or after `fromMs` with this desired count. */
  firstAt(desired: number, fromMs = -Infinity): number | undefined {
    return this.log.find((e) => e.t >= fromMs && e.d.desiredReplicas === desired)?.t;
  }
}

function expectInvalidParameter(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FerryError);
    assert.equal(err.code, 'INVALID_PARAMETER_VALUE');
    assert.equal(err.message, message);
    return true;
  });
}

describe('scalingSpecFor', () => {
  test('TSDoc example: Medium, target 4 → 2..4 replicas, defaults filled in, frozen', () => {
    const spec = scalingSpecFor(MEDIUM);
    assert.deepEqual(spec, { ...DEFAULT_SCALING_TUNABLES, minReplicas: 2, maxReplicas: 4 });
    assert.equal(spec.targetConcurrency, 4);
    assert.equal(spec.stableWindowMs, 30_000);
    assert.equal(spec.panicWindowMs, 3_000);
    assert.equal(spec.panicThreshold, 2);
    assert.equal(spec.scaleDownDelayMs, 10_000);
    assert.equal(spec.scaleToZeroGraceMs, 30_000);
    assert.equal(spec.maxScaleUpRate, 10);
    assert.ok(Object.isFrozen(spec));
    assert.ok(Object.isFrozen(DEFAULT_SCALING_TUNABLES));
  });

  test('each workload size, with and without scale-to-zero', () => {
    const bounds = (e: ScalableEntity, target?: number): [number, number] => {
      const s = scalingSpecFor(e, target === undefined ? {} : { targetConcurrency: target });
      return [s.minReplicas, s.maxReplicas];
    };
    assert.deepEqual(bounds({ workloadSize: 'Small', scaleToZeroEnabled: false }), [1, 1]);
    assert.deepEqual(bounds({ workloadSize: 'Small', scaleToZeroEnabled: true }), [0, 1]);
    assert.deepEqual(bounds({ workloadSize: 'Medium', scaleToZeroEnabled: false }), [2, 4]);
    assert.deepEqual(bounds({ workloadSize: 'Medium', scaleToZeroEnabled: true }), [0, 4]);
    assert.deepEqual(bounds({ workloadSize: 'Large', scaleToZeroEnabled: false }), [4, 16]);
    assert.deepEqual(bounds({ workloadSize: 'Large', scaleToZeroEnabled: true }), [0, 16]);
    // ceil at both ends: Medium at target 3 → ceil(8/3) = 3 .. ceil(16/3) = 6; Small at target 8 → 1..1.
    assert.deepEqual(bounds({ workloadSize: 'Medium', scaleToZeroEnabled: false }, 3), [3, 6]);
    assert.deepEqual(bounds({ workloadSize: 'Small', scaleToZeroEnabled: false }, 8), [1, 1]);
  });

  test('provisioned concurrency overrides either bound', () => {
    const bounds = (e: ScalableEntity): [number, number] => {
      const s = scalingSpecFor(e);
      return [s.minReplicas, s.maxReplicas];
    };
    // TSDoc example: Medium with max_provisioned_concurrency 40 → 2..10.
    assert.deepEqual(bounds({ ...MEDIUM, maxProvisionedConcurrency: 40 }), [2, 10]);
    assert.deepEqual(bounds({ ...MEDIUM, minProvisionedConcurrency: 13 }), [4, 4]);
    assert.deepEqual(bounds({ ...MEDIUM, minProvisionedConcurrency: 0, maxProvisionedConcurrency: 9 }), [1, 3]);
    // An explicit lower bound wins over scale-to-zero; min 0 without scale-to-zero still keeps 1.
    assert.deepEqual(bounds({ ...SMALL_ZERO, minProvisionedConcurrency: 4, maxProvisionedConcurrency: 8 }), [1, 2]);
    assert.deepEqual(bounds({ ...SMALL_ZERO, minProvisionedConcurrency: 0, maxProvisionedConcurrency: 8 }), [0, 2]);
    // A compiled ServedEntityConfig (required-but-undefined fields) is accepted as it is.
    const compiled: Pick<ServedEntityConfig, 'workloadSize' | 'scaleToZeroEnabled' | 'minProvisionedConcurrency' | 'maxProvisionedConcurrency'> = {
      workloadSize: 'Large', scaleToZeroEnabled: false, minProvisionedConcurrency: undefined, maxProvisionedConcurrency: undefined,
    };
    assert.deepEqual(bounds(compiled), [4, 16]);
  });

  test('tunables replace defaults; unset (undefined) ones keep them', () => {
    const spec = scalingSpecFor(MEDIUM, { targetConcurrency: 2, stableWindowMs: 60_000, panicWindowMs: 6_000, scaleDownDelayMs: undefined });
    assert.equal(spec.targetConcurrency, 2);
    assert.equal(spec.stableWindowMs, 60_000);
    assert.equal(spec.panicWindowMs, 6_000);
    assert.equal(spec.scaleDownDelayMs, 10_000);
    assert.deepEqual([spec.minReplicas, spec.maxReplicas], [4, 8]);
  });

  test('validation errors name the key, the value and the allowed range', () => {
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { panicThreshold: 0.5 }), "Invalid value 0.5 for 'panicThreshold': expected a number from 1.1 to 10.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { targetConcurrency: 0 }), "Invalid value 0 for 'targetConcurrency': expected a number from 0.1 to 1000.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { targetConcurrency: Number.NaN }), "Invalid value null for 'targetConcurrency': expected a number from 0.1 to 1000.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { stableWindowMs: 1500.5 }), "Invalid value 1500.5 for 'stableWindowMs': expected an integer from 1000 to 3600000.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { scaleDownDelayMs: -1 }), "Invalid value -1 for 'scaleDownDelayMs': expected an integer from 0 to 3600000.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { scaleToZeroGraceMs: 7_200_000 }), "Invalid value 7200000 for 'scaleToZeroGraceMs': expected an integer from 0 to 3600000.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { maxScaleUpRate: 0.5 }), "Invalid value 0.5 for 'maxScaleUpRate': expected a number from 1 to 1000.");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { stableWindowMs: 5_000, panicWindowMs: 6_000 }), "Invalid value 6000 for 'panicWindowMs': expected an integer from 1000 to stableWindowMs (5000).");
    expectInvalidParameter(() => scalingSpecFor(MEDIUM, { stableWindowS: 30 } as never), "Unknown key 'stableWindowS'.");
    expectInvalidParameter(
      () => scalingSpecFor({ workloadSize: 'Large', scaleToZeroEnabled: false, maxProvisionedConcurrency: 8 }),
      "Invalid value 8 for 'max_provisioned_concurrency': expected at least the lower bound of workload_size Large (16), or set min_provisioned_concurrency too.",
    );
    expectInvalidParameter(
      () => scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false, minProvisionedConcurrency: 8 }),
      "Invalid value 8 for 'min_provisioned_concurrency': expected at most the upper bound of workload_size Small (4), or set max_provisioned_concurrency too.",
    );
    expectInvalidParameter(
      () => scalingSpecFor({ ...MEDIUM, minProvisionedConcurrency: 9, maxProvisionedConcurrency: 8 }),
      "Invalid value 9 for 'min_provisioned_concurrency': expected at most max_provisioned_concurrency (8).",
    );
    expectInvalidParameter(() => scalingSpecFor({ ...MEDIUM, maxProvisionedConcurrency: 0 }), "Invalid value 0 for 'max_provisioned_concurrency': expected an integer of at least 1.");
    expectInvalidParameter(() => scalingSpecFor({ ...MEDIUM, minProvisionedConcurrency: -1 }), "Invalid value -1 for 'min_provisioned_concurrency': expected an integer of at least 0.");
  });
});

describe('decide', () => {
  test('step 1, no data → no decision: invalid without samples, and from a stable window after the last one', () => {
    const spec = scalingSpecFor(MEDIUM);
    const state = newScalerState(spec);
    const fresh = decide(spec, state, { readyReplicas: 3, startingReplicas: 1 }, 5_000);
    assert.equal(fresh.valid, false);
    assert.equal(fresh.desiredReplicas, 4, 'the current count (ready + starting)');
    assert.match(fresh.reason, /no samples/);

    const s2 = newScalerState(spec);
    record(s2, 0, 16);
    // TSDoc example: last sample at t = 0 → valid at 29 999, invalid at 30 000.
    assert.equal(decide(spec, s2, { readyReplicas: 2, startingReplicas: 0 }, 29_999).valid, true);
    const stale = decide(spec, s2, { readyReplicas: 2, startingReplicas: 0 }, 30_000);
    assert.equal(stale.valid, false);
    assert.equal(stale.desiredReplicas, 2);
  });

  test('step 2, step up: steady 16 in flight at target 4 → 4 replicas', () => {
    const spec = scalingSpecFor(WIDE);
    // Already 4 ready: 4 every second, never panicking.
    const settled = new Sim(spec, 4);
    for (const d of settled.run(120, 16)) {
      assert.equal(d.desiredReplicas, 4);
      assert.equal(d.panic, false);
      assert.equal(d.inputs.stableConcurrency, 16);
    }
    // From 1 ready: 4 at the first decision, and it stays 4.
    const fromOne = new Sim(spec, 1);
    assert.deepEqual(fromOne.run(60, 16).map((d) => d.desiredReplicas), Array<number>(60).fill(4));
  });

  test('step 2 example (no delay): 16 then 4 for k seconds → avg 16 − 0.4k; 3 from k = 10, 1 from k = 30', () => {
    const spec = scalingSpecFor(WIDE, { scaleDownDelayMs: 0 });
    const sim = new Sim(spec, 4);
    sim.run(60, 16);
    const after = sim.run(40, 4); // after[k − 1] is the k-th second of load 4
    const at = (k: number): Decision => after[k - 1]!;
    assert.equal(at(9).desiredReplicas, 4);
    assert.equal(at(10).desiredReplicas, 3);
    assert.equal(at(10).inputs.stableConcurrency, 12);
    assert.equal(at(20).desiredReplicas, 2);
    assert.equal(at(29).desiredReplicas, 2);
    assert.equal(at(30).desiredReplicas, 1);
    assert.ok(after.every((d) => !d.panic));
  });

  test('step 5, scale down after the window + delay: the same drop reaches 1 at k = 39, not 30', () => {
    const spec = scalingSpecFor(WIDE);
    const sim = new Sim(spec, 4);
    sim.run(60, 16);
    const after = sim.run(60, 4);
    const desired = after.map((d) => d.desiredReplicas);
    assert.equal(desired[9 - 1], 4);
    assert.equal(desired[18 - 1], 4, 'k = 10 asks for 3, but 4 is still in the 10 s delay window');
    assert.equal(desired[19 - 1], 3);
    assert.equal(desired[38 - 1], 2);
    assert.equal(desired[39 - 1], 1);
    assert.match(after[38 - 1]!.reason, /held at 2 by the 10000 ms scale-down delay/);
    // Monotonic on the way down: never up again for a load that only fell.
    for (let i = 1; i < desired.length; i++) assert.ok(desired[i]! <= desired[i - 1]!);
    assert.ok(desired.slice(38).every((n) => n === 1));
  });

  test('step 3, burst → panic: 1 ready at load 2, then 40 → 4, 7, 10 within the panic window', () => {
    const spec = scalingSpecFor(WIDE);
    const sim = new Sim(spec, 1, 0, 'starting');
    assert.ok(sim.run(60, 2).every((d) => d.desiredReplicas === 1 && !d.panic));
    const [b1, b2, b3] = sim.run(3, 40);
    assert.equal(b1!.panic, true);
    assert.equal(b1!.inputs.panicConcurrency, 44 / 3);
    assert.equal(b1!.inputs.stableConcurrency, 98 / 30);
    assert.equal(Math.ceil(b1!.inputs.stableConcurrency / 4), 1, 'the stable window alone would keep 1');
    assert.equal(b1!.desiredReplicas, 4);
    assert.equal(b2!.desiredReplicas, 7);
    assert.equal(b3!.desiredReplicas, 10);
    assert.equal(sim.state.panicSinceMs, 60_000);
  });

  test('step 3, hold during panic: the load drops inside panic → no scale down until the panic and the delay are over', () => {
    const spec = scalingSpecFor(WIDE);
    const sim = new Sim(spec, 1);
    sim.run(60, 2);
    sim.run(3, 40); // t = 60 000 .. 62 000; the condition last holds at 60 000 (4 ≥ 2 × 1)
    assert.equal(sim.state.lastPanicConditionMs, 60_000);
    const drop = sim.run(60, 2); // t = 63 000 .. 122 000
    const at = (t: number): Decision => drop[(t - 63_000) / 1000]!;
    for (let t = 63_000; t < 90_000; t += 1000) {
      assert.equal(at(t).desiredReplicas, 10, `t=${t}`);
      assert.equal(at(t).panic, true, `t=${t}`);
    }
    // Panic ends 30 s after the condition last held; the delay still holds the 10 of the panic.
    assert.equal(at(90_000).panic, false);
    assert.equal(at(90_000).desiredReplicas, 10);
    assert.equal(at(98_000).desiredReplicas, 10, 'the 10 of t = 89 000 is in the delay window (88 000, 98 000]');
    assert.equal(at(99_000).desiredReplicas, 2, 'the stable count of t = 90 000 (avg 4.53 → 2)');
    // At 100 000 the delay window (90 000, 100 000] holds only stable counts of 1 (avg 2 → 1).
    assert.equal(at(100_000).desiredReplicas, 1);
    assert.ok(drop.slice((100_000 - 63_000) / 1000).every((d) => d.desiredReplicas === 1));
  });

  test('a burst seen only by replicas already asked for does not re-trigger panic', () => {
    // 1 ready + 3 starting at load 16 (wants 4): the panic condition counts the 3 that are coming.
    const spec = scalingSpecFor(WIDE);
    const state = newScalerState(spec);
    record(state, 0, 16);
    const d = decide(spec, state, { readyReplicas: 1, startingReplicas: 3 }, 0);
    assert.equal(d.panic, false);
    assert.equal(d.desiredReplicas, 4);
  });

  test('a replica stuck starting is capacity coming: desired does not keep growing for the same load', () => {
    const sim = new Sim(scalingSpecFor({ workloadSize: 'Large', scaleToZeroEnabled: false, minProvisionedConcurrency: 0, maxProvisionedConcurrency: 400 }), 1, 0, 'starting');
    const ds = sim.run(180, 16);
    assert.ok(ds.every((d) => d.desiredReplicas === 4), 'ready 1 + starting 3 for three minutes: still 4');
    assert.equal(sim.starting, 3);
    assert.equal(ds.at(-1)!.panic, false);
    assert.deepEqual(ds.at(-1)!.inputs, { stableConcurrency: 16, panicConcurrency: 16, readyReplicas: 1, startingReplicas: 3 });
    // Load falls while they are still starting: desired goes below ready + starting; stopping the
    // starting ones is the caller's call to refuse (it stops ready replicas only).
    sim.run(45, 0);
    assert.equal(sim.log.at(-1)!.d.desiredReplicas, 1);
  });

  test('step 4, scale-up rate: ×10 ready per decision, at least +1, never below what was asked', () => {
    const spec = scalingSpecFor(WIDE);
    // TSDoc: 1 ready, load 400 (wants 100) → 10; then 10 ready → 100.
    const sim = new Sim(spec, 1);
    const first = sim.tick(400);
    assert.equal(first.desiredReplicas, 10);
    assert.match(first.reason, /rate-limited to 10/);
    assert.equal(sim.tick(400).desiredReplicas, 100);

    // Rate 1 still grows by one: 1 ready, load 12 (wants 3) → 2.
    const slow = scalingSpecFor(WIDE, { maxScaleUpRate: 1 });
    const s1 = newScalerState(slow);
    record(s1, 0, 12);
    assert.equal(decide(slow, s1, { readyReplicas: 1, startingReplicas: 0 }, 0).desiredReplicas, 2);

    // 1 ready and 20 starting, load 400 → at most 21 (not 10: never below what is already asked for).
    const s2 = newScalerState(spec);
    record(s2, 0, 400);
    assert.equal(decide(spec, s2, { readyReplicas: 1, startingReplicas: 20 }, 0).desiredReplicas, 21);

    // From zero: max(ready, 1) → up to 10 at once.
    const s3 = newScalerState(spec);
    record(s3, 0, 400);
    assert.equal(decide(spec, s3, { readyReplicas: 0, startingReplicas: 0 }, 0).desiredReplicas, 10);
  });

  test('step 6, to zero after the grace when allowed: load 4 until 59 000 → 0 from 98 000', () => {
    const spec = scalingSpecFor(SMALL_ZERO);
    assert.equal(spec.minReplicas, 0);
    const sim = new Sim(spec, 1);
    sim.run(60, 4); // t = 0 .. 59 000
    sim.run(60, 0); // t = 60 000 .. 119 000
    const at = (t: number): Decision => sim.log.find((e) => e.t === t)!.d;
    assert.equal(at(88_000).desiredReplicas, 1);
    assert.equal(at(89_000).desiredReplicas, 1, 'grace over at 89 000 (59 000 + 30 000), but the delay holds 1');
    assert.equal(at(97_000).desiredReplicas, 1);
    assert.equal(at(98_000).desiredReplicas, 0);
    assert.match(at(98_000).reason, /≥ grace → 0/);
    assert.equal(sim.firstAt(0), 98_000);
    assert.ok(sim.log.filter((e) => e.t >= 98_000).every((e) => e.d.desiredReplicas === 0), 'and stays at zero without load');
  });

  test('step 6, grace longer than the windows: 60 s of zeros needed', () => {
    const spec = scalingSpecFor(SMALL_ZERO, { scaleToZeroGraceMs: 60_000 });
    const sim = new Sim(spec, 1);
    sim.run(60, 4);
    sim.run(90, 0);
    assert.equal(sim.firstAt(0), 119_000); // 59 000 + 60 000
    assert.match(sim.log.find((e) => e.t === 118_000)!.d.reason, /idle 59000 ms < grace 60000 ms → 1/);
  });

  test('step 6, after a restart with 1 replica and no load: 0 only once data covers the grace (t = 30 000)', () => {
    const spec = scalingSpecFor(SMALL_ZERO);
    const sim = new Sim(spec, 1);
    sim.run(40, 0);
    assert.equal(sim.firstAt(0), 30_000);
    assert.equal(sim.log.find((e) => e.t === 29_000)!.d.desiredReplicas, 1);
  });

  test('step 6, a data gap restarts the grace', () => {
    const spec = scalingSpecFor(SMALL_ZERO);
    const state = newScalerState(spec);
    for (let t = 0; t <= 20_000; t += 1000) record(state, t, 0);
    // Nothing for 40 s (the stable window ran empty), then zeros again from 60 000.
    for (let t = 60_000; t < 89_000; t += 1000) {
      record(state, t, 0);
      assert.equal(decide(spec, state, { readyReplicas: 1, startingReplicas: 0 }, t).desiredReplicas, 1, `t=${t}`);
    }
    record(state, 90_000, 0);
    assert.equal(decide(spec, state, { readyReplicas: 1, startingReplicas: 0 }, 90_000).desiredReplicas, 0);
  });

  test('step 6, never to zero when scale-to-zero is off', () => {
    const sim = new Sim(scalingSpecFor({ workloadSize: 'Small', scaleToZeroEnabled: false }), 1);
    sim.run(60, 4);
    assert.ok(sim.run(600, 0).every((d) => d.desiredReplicas === 1));
  });

  test('step 6, already at zero without load: stays at zero (no replica for nothing)', () => {
    const sim = new Sim(scalingSpecFor(SMALL_ZERO), 0);
    assert.ok(sim.run(60, 0).every((d) => d.valid && d.desiredReplicas === 0));
  });

  test('step 7, never below min or above max', () => {
    const spec = scalingSpecFor(MEDIUM); // 2..4
    const sim = new Sim(spec, 2);
    const idle = sim.run(120, 0);
    assert.ok(idle.every((d) => d.desiredReplicas === 2));
    assert.match(idle.at(-1)!.reason, /raised to min 2/);
    const busy = sim.run(120, 1000);
    assert.ok(busy.every((d) => d.desiredReplicas >= 2 && d.desiredReplicas <= 4));
    assert.equal(busy.at(-1)!.desiredReplicas, 4);
    assert.match(busy.at(-1)!.reason, /clamped to max 4/);
    // Min wins over the rate limit: 40 min replicas from 1 ready (rate limit alone would give 10).
    const big = scalingSpecFor({ workloadSize: 'Large', scaleToZeroEnabled: false, minProvisionedConcurrency: 160, maxProvisionedConcurrency: 400 });
    const s = newScalerState(big);
    record(s, 0, 0);
    assert.equal(decide(big, s, { readyReplicas: 1, startingReplicas: 0 }, 0).desiredReplicas, 40);
  });

  test('step 8, poke from zero: a request at 0 replicas gives ≥ 1 at once, whatever the windows', () => {
    // Fresh state: one sample of 1 → 1 immediately.
    const spec = scalingSpecFor(SMALL_ZERO);
    const fresh = newScalerState(spec);
    record(fresh, 12_345, 1);
    const d = decide(spec, fresh, { readyReplicas: 0, startingReplicas: 0 }, 12_345);
    assert.equal(d.valid, true);
    assert.equal(d.desiredReplicas, 1);

    // TSDoc example: a 1 h stable window full of zeros, then a poke between ticks → 1.
    const long = scalingSpecFor(SMALL_ZERO, { stableWindowMs: 3_600_000, scaleToZeroGraceMs: 3_600_000 });
    const state = newScalerState(long);
    for (let t = 0; t < 3_600_000; t += 1000) {
      record(state, t, 0);
      assert.equal(decide(long, state, { readyReplicas: 0, startingReplicas: 0 }, t).desiredReplicas, 0);
    }
    record(state, 3_600_500, 1);
    assert.equal(decide(long, state, { readyReplicas: 0, startingReplicas: 0 }, 3_600_500).desiredReplicas, 1);

    // A burst at zero: up to the rate limit at once (WIDE: 40 → 10).
    const wide = scalingSpecFor(WIDE);
    const s3 = newScalerState(wide);
    record(s3, 0, 40);
    assert.equal(decide(wide, s3, { readyReplicas: 0, startingReplicas: 0 }, 0).desiredReplicas, 10);
  });

  test('deterministic: the same samples and clock give the same decisions', () => {
    const spec = scalingSpecFor(WIDE);
    const load = (i: number): number => (i * 37) % 53 + (i > 100 && i < 110 ? 200 : 0);
    const runOnce = (): Decision[] => {
      const sim = new Sim(spec, 1);
      return Array.from({ length: 300 }, (_, i) => sim.tick(load(i)));
    };
    assert.deepEqual(runOnce(), runOnce());
  });

  test('state stays bounded however often the caller samples or decides', () => {
    const spec = scalingSpecFor(WIDE);
    const state = newScalerState(spec);
    const buckets = state.buckets.length;
    assert.equal(buckets, 31);
    const load = (t: number): number => (t / 100) % 400;
    for (let t = 0; t < 300_000; t += 100) {
      record(state, t, load(t));
      decide(spec, state, { readyReplicas: 5, startingReplicas: 0 }, t);
      assert.ok(state.recentDesired.length <= spec.maxReplicas + 1);
    }
    assert.equal(state.buckets.length, buckets);
    // Ten samples a second are averaged per sample, not per bucket: the 300 samples of
    // (269 900, 299 900] are 300..399 then 0..199 → 54 850 / 300.
    const d = decide(spec, state, { readyReplicas: 5, startingReplicas: 0 }, 299_900);
    assert.equal(d.inputs.stableConcurrency, 54_850 / 300);
    let sum = 0;
    let count = 0;
    for (let t = 269_900 + 100; t <= 299_900; t += 100) {
      sum += load(t);
      count++;
    }
    assert.equal(count, 300);
    assert.equal(d.inputs.stableConcurrency, sum / count);
  });

  test('rejects time going backwards and bad inputs', () => {
    const spec = scalingSpecFor(MEDIUM);
    const state = newScalerState(spec);
    record(state, 10_000, 1);
    assert.throws(() => record(state, 9_000, 1), RangeError);
    assert.throws(() => decide(spec, state, { readyReplicas: 1, startingReplicas: 0 }, 9_999), RangeError);
    assert.throws(() => record(state, 11_000, -1), RangeError);
    assert.throws(() => record(state, 11_000, Number.NaN), RangeError);
    assert.throws(() => decide(spec, state, { readyReplicas: 1.5, startingReplicas: 0 }, 11_000), RangeError);
    assert.throws(() => decide(spec, state, { readyReplicas: 1, startingReplicas: -1 }, 11_000), RangeError);
  });
});
