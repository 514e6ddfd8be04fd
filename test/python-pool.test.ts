/**
 * The Python warm pool (src/runtime/local/python-pool.ts) with real processes: a scikit-learn model
 * saved by the vendored MLflow (../shared/vendor/mlflow, or FERRY_MLFLOW_PATH) is served by python
 * replicas of a real LocalRuntime whose workers a sandboxed fork server forks.
 * - Scale from zero claims the idle fork server (and a Node pool process): the worker is forked,
 *   predictions are right, both pools refill. The cold start p50 with and without the pools is
 *   printed (not asserted: this is a shared machine).
 * - 4 replicas of one model fork from one fork server: its Python side (fork server + workers)
 *   costs less than twice that of one replica (PSS; the total with the Node replicas is printed).
 * - Two models never share a fork server; a model's last replica stopping kills its fork server.
 * Runs as root only (the sandbox and the replica user), like the sandbox tests.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { ReplicaSpec } from '../src/runtime/index.js';
import { LocalRuntime } from '../src/runtime/local/index.js';
import { descendants, processTree, proportionalBytes } from '../src/runtime/local/proc.js';
import { MLFLOW_PATH, request, SYSTEM_PYTHON, tempDir, waitFor } from './support/index.js';

const run = promisify(execFile);
const MIB = 1024 * 1024;
const skip = process.getuid?.() !== 0 ? 'needs root (the sandbox runs replicas as nobody)' : undefined;

let dir: string;
const runtimes: LocalRuntime[] = [];

/** Saves a LinearRegression (column signature a, b) with MLflow's own save_model into `out`. */
async function saveModel(out: string, slope: number): Promise<void> {
  const script = `
import sys, numpy as np, pandas as pd, mlflow
from sklearn.linear_model import LinearRegression
x = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0]})
mlflow.sklearn.save_model(LinearRegression().fit(x, ${slope} * x["a"] + x["b"]), sys.argv[1], input_example=x.head(2))
`;
  await run(SYSTEM_PYTHON, ['-c', script, out], { env: { ...process.env, PYTHONPATH: MLFLOW_PATH } });
}

function spec(id: string, artifactDir: string, endpoint = 'ep'): ReplicaSpec {
  return {
    id, endpoint, servedEntity: 'sk', artifactDir, modelFile: 'MLmodel', flavor: 'python', workloadType: 'CPU', modelName: 'sk', modelVersion: '1',
    memoryLimitBytes: 1024 * MIB, maxBodyBytes: 16 * MIB, maxRowsPerRequest: 100_000, maxJsonDepth: 64, maxJsonElements: 4_194_304,
    batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
  };
}

async function openRuntime(name: string, pools: boolean): Promise<LocalRuntime> {
  const stateDir = path.join(dir, name);
  await fsp.mkdir(stateDir);
  const rt = await LocalRuntime.open({
    stateDir, startTimeoutMs: 60_000, drainTimeoutMs: 2000, replicaUser: 'nobody', python: SYSTEM_PYTHON, sandbox: 'bwrap',
    warmPoolSize: pools ? 1 : 0, warmPoolMemoryLimitBytes: 1024 * MIB, pythonWarmPoolSize: pools ? 1 : 0,
  });
  runtimes.push(rt);
  return rt;
}

/** Both pools hold an idle, ready process. */
async function poolsIdle(rt: LocalRuntime): Promise<void> {
  await waitFor('idle pool processes', async () => (rt.warmPool().idlePids.length === 1 && (await rt.pythonWarmPool()).idlePids.length === 1 ? true : undefined), 60_000);
}

/** The model's prediction for one row, rounded to 9 digits (a least-squares fit is exact only to rounding). */
async function predict(socketPath: string, a: number, b: number): Promise<unknown> {
  const r = await request({ socketPath, method: 'POST', path: '/invocations', json: { dataframe_split: { columns: ['a', 'b'], data: [[a, b]] } } });
  assert.equal(r.status, 200, r.text);
  return { predictions: (r.json as { predictions: number[] }).predictions.map((x) => Number(x.toFixed(9))) };
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
}

before(async () => {
  if (skip !== undefined) return;
  dir = await tempDir();
  await fsp.chmod(dir, 0o755);
  assert.ok(fs.existsSync(path.join(MLFLOW_PATH, 'mlflow', '__init__.py')), `MLflow not found at ${MLFLOW_PATH} (set FERRY_MLFLOW_PATH)`);
  await Promise.all([saveModel(path.join(dir, 'm2'), 2), saveModel(path.join(dir, 'm3'), 3)]);
});

after(async () => {
  await Promise.all(runtimes.map((rt) => rt.close()));
  if (dir !== undefined) await fsp.rm(dir, { recursive: true, force: true });
});

describe('python warm pool', { skip }, () => {
  test('scale from zero forks the worker from a warm fork server; both pools refill (cold start p50 printed with and without)', async () => {
    const rt = await openRuntime('pooled', true);
    const pooled: number[] = [];
    for (let i = 0; i < 5; i++) {
      await poolsIdle(rt);
      const h = await rt.startReplica(spec(`p${i}`, path.join(dir, 'm2')));
      pooled.push(h.coldStartMs ?? NaN);
      assert.equal(h.fromPool, true, 'a Node pool process was claimed');
      assert.ok(h.address.kind === 'unix');
      assert.deepEqual(await predict(h.address.socketPath, 5, 1), { predictions: [11] });
      const log = await fsp.readFile(path.join(dir, 'pooled', 'logs', 'ep', 'sk', `p${i}.log`), 'utf8');
      assert.match(log, /"msg":"python worker loaded the model".*"forked":true/);
      await rt.stopReplica(h.id);
      // The model's fork server goes with its last replica.
      await waitFor('the claimed fork server to go', async () => ((await rt.pythonWarmPool()).claimedPids.length === 0 ? true : undefined), 30_000);
    }
    const plain = await openRuntime('plain', false);
    const spawned: number[] = [];
    for (let i = 0; i < 3; i++) {
      const h = await plain.startReplica(spec(`s${i}`, path.join(dir, 'm2')));
      spawned.push(h.coldStartMs ?? NaN);
      assert.ok(h.address.kind === 'unix');
      assert.deepEqual(await predict(h.address.socketPath, 5, 1), { predictions: [11] });
      await plain.stopReplica(h.id);
    }
    console.log(`python scale from zero (sklearn): p50 ${median(pooled).toFixed(0)} ms with the pools [${pooled.map((m) => m.toFixed(0)).join(', ')}], `
      + `${median(spawned).toFixed(0)} ms without [${spawned.map((m) => m.toFixed(0)).join(', ')}]`);
    await plain.close();
  });

  test('4 replicas of one model fork from one fork server: its Python side costs less than twice that of one replica (PSS, printed with the Node replicas)', async () => {
    const rt = await openRuntime('pss', true);
    await poolsIdle(rt);
    const model = path.join(dir, 'm3');
    /** PSS of the model's fork server with its workers, and of the Node replicas (each with its bwrap). */
    const pss = async (): Promise<{ python: number; node: number }> => {
      const tree = await processTree();
      const of = (roots: number[]): Promise<number> => proportionalBytes(roots.flatMap((p) => descendants(p, tree)));
      return { python: await of((await rt.pythonWarmPool()).claimedPids), node: await of(rt.list().map((h) => h.pid ?? 0)) };
    };
    const first = await rt.startReplica(spec('q0', model));
    assert.ok(first.address.kind === 'unix');
    await predict(first.address.socketPath, 1, 0);
    const one = await pss();
    const rest = [];
    for (let i = 1; i < 4; i++) {
      // Started one at a time, as an autoscaler adds them; a Node pool process is claimed when one is idle.
      rest.push(await rt.startReplica(spec(`q${i}`, model)));
    }
    for (const h of rest) {
      assert.ok(h.address.kind === 'unix');
      assert.deepEqual(await predict(h.address.socketPath, 2, 1), { predictions: [7] });
    }
    assert.equal((await rt.pythonWarmPool()).claimedPids.length, 1, 'one fork server for the model');
    const four = await pss();
    const mib = (b: number): string => (b / MIB).toFixed(1);
    console.log(`python PSS (sklearn): 1 replica ${mib(one.python)} MiB Python + ${mib(one.node)} MiB Node = ${mib(one.python + one.node)} MiB; `
      + `4 replicas ${mib(four.python)} + ${mib(four.node)} = ${mib(four.python + four.node)} MiB (${((four.python + four.node) / (one.python + one.node)).toFixed(2)}× in all, `
      + `${(four.python / one.python).toFixed(2)}× for the Python side)`);
    // The forks share the fork server's pages: 3 more workers cost far less than another interpreter.
    assert.ok(four.python < 2 * one.python, `Python side: 4 replicas ${four.python} B ≥ 2 × ${one.python} B`);
    await Promise.all(rt.list().map((h) => rt.stopReplica(h.id)));
  });

  test('two models never share a fork server; each keeps its own until its last replica stops', async () => {
    const rt = await openRuntime('two', true);
    await poolsIdle(rt);
    const a = await rt.startReplica(spec('a0', path.join(dir, 'm2'), 'epa'));
    const b = await rt.startReplica(spec('b0', path.join(dir, 'm3'), 'epb'));
    const a1 = await rt.startReplica(spec('a1', path.join(dir, 'm2'), 'epa'));
    for (const [h, want] of [[a, 11], [b, 16], [a1, 11]] as const) {
      assert.ok(h.address.kind === 'unix');
      assert.deepEqual(await predict(h.address.socketPath, 5, 1), { predictions: [want] });
    }
    assert.equal((await rt.pythonWarmPool()).claimedPids.length, 2, 'one fork server per model');
    await rt.stopReplica('a0');
    assert.equal((await rt.pythonWarmPool()).claimedPids.length, 2, 'model a still has a replica');
    assert.ok(a1.address.kind === 'unix');
    assert.deepEqual(await predict(a1.address.socketPath, 5, 1), { predictions: [11] });
    await rt.stopReplica('a1');
    await waitFor('model a\'s fork server to go', async () => ((await rt.pythonWarmPool()).claimedPids.length === 1 ? true : undefined), 30_000);
    assert.ok(b.address.kind === 'unix');
    assert.deepEqual(await predict(b.address.socketPath, 5, 1), { predictions: [16] });
    await rt.stopReplica('b0');
  });
});
