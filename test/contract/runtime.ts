/**
 * The runtime contract: every Runtime implementation runs this suite (local child processes;
 * Kubernetes pods, against the Kubernetes API contract double). Replicas are real: they load a real ONNX model and
 * answer real requests at the address the runtime hands back.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { FramedChannel, framePayloadLimit } from '../../src/channel/index.js';
import { FerryError } from '../../src/errors.js';
import { encodeMemberArtifact } from '../../src/multi/index.js';
import type { ReplicaAddress, ReplicaExit, ReplicaHandle, ReplicaSpec, Runtime } from '../../src/runtime/index.js';
import { request, waitFor, type HttpResult } from '../support/index.js';

export interface RuntimeHarness {
  runtime: Runtime;
  /**
   * A spec for replica `id` of endpoint "ep", served entity `servedEntity` (default "linear"):
   * model 'linear' is the linear.onnx fixture (y = x·w + b, [[1,2,3,4]] → [[5.625]]), 'broken' a
   * model file of garbage bytes.
   */
  makeSpec(id: string, model: 'linear' | 'broken', overrides?: Partial<ReplicaSpec>): ReplicaSpec;
  /** Kills a replica abruptly, as a crash would (local: SIGKILL its process). */
  crash(handle: ReplicaHandle): Promise<void>;
  /** Stops the runtime if a test did not, and removes everything the harness created. */
  cleanup(): Promise<void>;
  /**
   * Runtimes with a warm pool of pre-started replica processes (local `warmPoolSize`): how many
   * are idle now. The harness returns the runtime once the pool is full, so the first start
   * claims a pooled process. Absent: the warm-pool tests are skipped.
   */
  idlePoolProcesses?(): number;
  /**
   * Replicas keep serving after `close` (Kubernetes: a control-plane restart must not take pods
   * down; the next `open` adopts them) and `cleanup` removes them. Absent: `close` stops every
   * replica.
   */
  replicasOutliveClose?: boolean;
}

/** A request to a replica at whatever address the runtime handed back. */
export function requestReplica(address: ReplicaAddress, path: string, json?: unknown): Promise<HttpResult> {
  const target = address.kind === 'unix' ? { socketPath: address.socketPath } : { url: `http://${address.host}:${address.port}` };
  return request({ ...target, path, token: null, ...(json === undefined ? {} : { json }) });
}

async function predictLinear(address: ReplicaAddress): Promise<void> {
  const res = await requestReplica(address, '/invocations', { inputs: [[1, 2, 3, 4]] });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json, { predictions: [[5.625]] });
}

export function runtimeContract(name: string, makeHarness: () => Promise<RuntimeHarness>, opts: { warmPool?: boolean } = {}): void {
  describe(`Runtime contract: ${name}`, () => {
    const withRuntime = (title: string, fn: (h: RuntimeHarness, exits: ReplicaExit[]) => Promise<void>, only?: 'warm pool'): void => {
      test(title, { timeout: 60_000, skip: only === 'warm pool' && opts.warmPool !== true ? 'no warm pool' : false }, async () => {
        const h = await makeHarness();
        const exits: ReplicaExit[] = [];
        h.runtime.onExit((e) => exits.push(e));
        try {
          await fn(h, exits);
        } finally {
          await h.runtime.close();
          await h.cleanup();
        }
      });
    };

    withRuntime('a started replica is ready, predicts, is listed, and stops without an exit report', async (h, exits) => {
      const spec = h.makeSpec('ep.linear.a', 'linear');
      const handle = await h.runtime.startReplica(spec);
      assert.equal(handle.id, 'ep.linear.a');
      assert.deepEqual(handle.spec, spec);
      assert.equal((await requestReplica(handle.address, '/v2/health/ready')).status, 200);
      await predictLinear(handle.address);
      assert.deepEqual(h.runtime.list().map((r) => r.id), ['ep.linear.a']);

      await h.runtime.stopReplica(handle.id);
      assert.deepEqual(h.runtime.list(), []);
      await assert.rejects(requestReplica(handle.address, '/v2/health/ready'), 'a stopped replica no longer answers');
      await h.runtime.stopReplica(handle.id); // a second stop, or an unknown id, is a no-op
      await h.runtime.stopReplica('never-started');
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(exits, [], 'a requested stop is not an exit report');
    });

    withRuntime('a broken model fails the start with the replica\'s own reason and leaves nothing', async (h, exits) => {
      await assert.rejects(h.runtime.startReplica(h.makeSpec('ep.broken.a', 'broken', { servedEntity: 'broken' })), (err: unknown) => {
        assert.ok(err instanceof FerryError, String(err));
        assert.equal(err.code, 'MODEL_ERROR');
        assert.match(err.message, /ep\.broken\.a/);
        // onnxruntime's own complaint about the garbage file, relayed from the replica.
        assert.match(err.message, /protobuf|parse|load|model/i);
        return true;
      });
      assert.deepEqual(h.runtime.list(), []);
      assert.deepEqual(exits, [], 'a failed start is reported by the rejection, not onExit');
      assert.match(await h.runtime.logs('ep', 'broken', 100_000), /replica failed to start/);
    });

    withRuntime('a replica that dies on its own is reported once as crashed, with its last log lines', async (h, exits) => {
      const handle = await h.runtime.startReplica(h.makeSpec('ep.linear.crash', 'linear'));
      await h.crash(handle);
      const [exit] = await waitFor('exit report', () => (exits.length > 0 ? exits : undefined));
      assert.equal(exit?.id, 'ep.linear.crash');
      assert.equal(exit?.reason, 'crashed');
      assert.match(exit?.lastLogLines ?? '', /replica ready/);
      assert.deepEqual(h.runtime.list(), []);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(exits.length, 1, 'reported exactly once');
      await h.runtime.stopReplica(handle.id); // stopping a replica that is already gone is a no-op
    });

    withRuntime('logs returns the entity\'s replica logs, bounded by maxBytes', async (h) => {
      assert.equal(await h.runtime.logs('ep', 'linear', 10_000), '', 'no logs before any replica');
      const handle = await h.runtime.startReplica(h.makeSpec('ep.linear.logs', 'linear'));
      const text = await h.runtime.logs('ep', 'linear', 100_000);
      assert.match(text, /replica ready/);
      const tail = await h.runtime.logs('ep', 'linear', 10);
      assert.ok(Buffer.byteLength(tail) <= 10 && text.endsWith(tail), JSON.stringify(tail));
      assert.equal(await h.runtime.logs('ep', 'other', 10_000), '');
      await assert.rejects(h.runtime.logs('..', 'linear', 10_000), FerryError);
      await assert.rejects(h.runtime.logs('ep', '../../x', 10_000), FerryError);
      await h.runtime.stopReplica(handle.id);
      assert.match(await h.runtime.logs('ep', 'linear', 100_000), /replica ready/, 'logs outlive the replica');
      // Deleting the endpoint deletes them: a new endpoint of the same name starts with none.
      await h.runtime.deleteLogs('ep');
      assert.equal(await h.runtime.logs('ep', 'linear', 100_000), '');
      await assert.rejects(h.runtime.deleteLogs('..'), FerryError);
    });

    withRuntime('two replicas of one entity run side by side; close stops them all, or leaves them serving where they outlive it', async (h, exits) => {
      const [a, b] = await Promise.all([
        h.runtime.startReplica(h.makeSpec('ep.linear.1', 'linear')),
        h.runtime.startReplica(h.makeSpec('ep.linear.2', 'linear')),
      ]);
      assert.notDeepEqual(a.address, b.address);
      await Promise.all([predictLinear(a.address), predictLinear(b.address)]);
      assert.deepEqual(h.runtime.list().map((r) => r.id).sort(), ['ep.linear.1', 'ep.linear.2']);
      await assert.rejects(h.runtime.startReplica(h.makeSpec('ep.linear.1', 'linear')), (err: unknown) => err instanceof FerryError && err.code === 'RESOURCE_ALREADY_EXISTS');
      await h.runtime.close();
      assert.deepEqual(h.runtime.list(), []);
      if (h.replicasOutliveClose === true) {
        await Promise.all([predictLinear(a.address), predictLinear(b.address)]);
      } else {
        await assert.rejects(requestReplica(a.address, '/v2/health/ready'));
        await assert.rejects(requestReplica(b.address, '/v2/health/ready'));
      }
      assert.deepEqual(exits, []);
    });

    withRuntime('a family replica starts with no model and loads the members requests name, from wherever its runtime keeps them', async (h, exits) => {
      // The linear fixture is the one member: its directory (local: the runtime stages it) and its
      // artifact key and sha256 (pods: fetched from the store as the request's metadata names it).
      const linear = h.makeSpec('ep.fam.m', 'linear');
      const spec = h.makeSpec('ep.fam.a', 'linear', {
        servedEntity: 'fam', artifactDir: '', modelFile: '',
        family: {
          cacheBytes: 1024 * 1024, sessionFallback: false,
          stage: async (name, version) => {
            if (name !== 'lin' || version !== 1) throw new FerryError('RESOURCE_DOES_NOT_EXIST', `Model '${name}' version ${version} is not in this family.`);
            return { modelFile: linear.modelFile, bytes: await fsp.readFile(path.join(linear.artifactDir, linear.modelFile)) };
          },
        },
      });
      const handle = await h.runtime.startReplica(spec);
      const metrics = async (): Promise<{ models: number; loads: number; hits: number }> => ((await requestReplica(handle.address, '/metrics')).json as { family: { models: number; loads: number; hits: number } }).family;
      assert.deepEqual(await metrics().then((m) => m.models), 0, 'no model at start');
      const member = encodeMemberArtifact({ key: linear.artifactKey ?? 'models/lin/1', sha256: linear.artifactSha256 ?? '0'.repeat(64), modelFile: linear.modelFile });
      const channel = new FramedChannel(handle.address, { maxPayloadBytes: framePayloadLimit(spec.maxBodyBytes) });
      try {
        const ask = (path: string): Promise<{ status: number; json: unknown }> => channel.request({
          method: 'POST', path, body: Buffer.from(JSON.stringify({ inputs: [[1, 2, 3, 4]] })),
          meta: { requestId: 'r1', traceparent: undefined, tracestate: undefined, wantSpan: false, member },
        }, 10_000).then((r) => ({ status: r.status, json: JSON.parse(r.body.toString('utf8')) as unknown }));
        // Concurrent misses share one load; then hits.
        const answers = await Promise.all([ask('/family/lin/1/invocations'), ask('/family/lin/1/invocations')]);
        for (const a of answers) assert.deepEqual(a, { status: 200, json: { predictions: [[5.625]] } });
        assert.deepEqual(await ask('/family/lin/1/invocations'), { status: 200, json: { predictions: [[5.625]] } });
        const m = await metrics();
        assert.deepEqual([m.models, m.loads], [1, 1], JSON.stringify(m));
        // A request without the member's artifact still finds a loaded member.
        const plain = await requestReplica(handle.address, '/family/lin/1/invocations', { inputs: [[1, 2, 3, 4]] });
        assert.equal(plain.status, 200, plain.text);
      } finally {
        channel.close();
      }
      await h.runtime.stopReplica(handle.id);
      assert.deepEqual(exits, []);
    });

    withRuntime('a replica claimed from the warm pool answers exactly like a spawned one; the pool refills', async (h, exits) => {
      const idle = (): number => h.idlePoolProcesses?.() ?? assert.fail('idlePoolProcesses');
      assert.equal(idle(), 1, 'the harness hands the runtime over with its pool full');
      // One start claims the idle process, the other finds the pool empty and spawns.
      const [a, b] = await Promise.all([
        h.runtime.startReplica(h.makeSpec('ep.linear.p1', 'linear')),
        h.runtime.startReplica(h.makeSpec('ep.linear.p2', 'linear')),
      ]);
      assert.deepEqual([a.fromPool, b.fromPool].sort(), [false, true]);
      for (const handle of [a, b]) {
        assert.ok(handle.coldStartMs !== undefined && handle.coldStartMs > 0, String(handle.coldStartMs));
      }
      const ask = async (address: ReplicaAddress): Promise<unknown[]> => {
        const results = await Promise.all([
          requestReplica(address, '/invocations', { inputs: [[1, 2, 3, 4]] }),
          requestReplica(address, '/invocations', { inputs: [[1, 2, 3, 4], [0, 0, 0, 0]] }),
          requestReplica(address, '/v2/models/linear/versions/1/infer', { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] }),
          requestReplica(address, '/v2/models/linear'),
          requestReplica(address, '/v2/models/other/ready'),
          requestReplica(address, '/invocations', { inputs: [[1, 2, 3]] }),
        ]);
        return results.map((r) => [r.status, r.json]);
      };
      const answers = await ask(a.address);
      assert.deepEqual(await ask(b.address), answers);
      assert.deepEqual(answers[0], [200, { predictions: [[5.625]] }]);
      assert.equal((answers[5] as [number])[0], 400, 'a bad shape is refused the same way');

      await waitFor('the pool to refill', () => (idle() === 1 ? true : undefined), 30_000);
      // The refilled process serves the next start.
      const c = await h.runtime.startReplica(h.makeSpec('ep.linear.p3', 'linear'));
      assert.equal(c.fromPool, true);
      await predictLinear(c.address);
      assert.deepEqual(h.runtime.list().map((r) => r.id).sort(), ['ep.linear.p1', 'ep.linear.p2', 'ep.linear.p3']);
      await Promise.all([a, b, c].map((x) => h.runtime.stopReplica(x.id)));
      assert.deepEqual(exits, []);
    }, 'warm pool');

    withRuntime('a claimed replica logs to its entity\'s logs; killed, it is reported once', async (h, exits) => {
      const handle = await h.runtime.startReplica(h.makeSpec('ep.linear.pcrash', 'linear', { servedEntity: 'pooled' }));
      assert.equal(handle.fromPool, true);
      const text = await h.runtime.logs('ep', 'pooled', 100_000);
      // The pool process's own start lines, then the replica's.
      assert.match(text, /pool process warm[^]*replica ready/);
      assert.equal(await h.runtime.logs('ep', 'linear', 100_000), '', 'nothing in another entity\'s logs');
      await h.crash(handle);
      const [exit] = await waitFor('exit report', () => (exits.length > 0 ? exits : undefined));
      assert.equal(exit?.id, 'ep.linear.pcrash');
      assert.equal(exit?.reason, 'crashed');
      assert.match(exit?.lastLogLines ?? '', /replica ready/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(exits.length, 1, 'reported exactly once');
      assert.deepEqual(h.runtime.list(), []);
    }, 'warm pool');
  });
}
