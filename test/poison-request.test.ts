/**
 * A request that kills the replica serving it (a model driven past its memory limit by one
 * input) is answered 502 and not retried on another replica: with two replicas, one dies, not
 * both; the endpoint keeps answering other requests.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { FerryServer } from '../src/server/index.js';
import { replicaPids, request, startTestServer, tempDir, waitFor, waitSettled, type HttpResult } from './support/index.js';

/** Answers a text's length; "boom" makes it allocate 16 MiB (touched, so resident) every 50 ms until the runtime kills it. */
const MODEL_MJS = `export async function load() {}
export function predict(input) {
  const y = [];
  for (const text of input.text) {
    if (text === 'boom') {
      const held = [];
      const pause = new Int32Array(new SharedArrayBuffer(4));
      for (;;) {
        held.push(Buffer.alloc(16 << 20, 1));
        Atomics.wait(pause, 0, 0, 50);
      }
    }
    y.push(text.length);
  }
  return { y };
}
`;

let dir: string;
let dataDir: string;
let server: FerryServer;
const call = (method: string, p: string, json?: unknown): Promise<HttpResult> => request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });
const alive = (pid: number): Promise<boolean> => fsp.readFile(`/proc/${pid}/stat`, 'utf8').then((s) => !/^\d+ \(.*\) [ZX]/.test(s), () => false);

before(async () => {
  dir = await tempDir();
  dataDir = path.join(dir, 'data');
  server = await startTestServer(dataDir, { replicaMemoryLimit: '320MiB', warmPoolSize: 0 });
  const modelDir = path.join(dir, 'poison');
  await fsp.mkdir(modelDir);
  await fsp.writeFile(path.join(modelDir, 'model.mjs'), MODEL_MJS);
  await fsp.writeFile(path.join(modelDir, 'ferry.json'), JSON.stringify({
    flavor: 'js', main: 'model.mjs', timeout_ms: 60_000,
    signature: { inputs: [{ name: 'text', dtype: 'string', shape: [-1] }], outputs: [{ name: 'y', dtype: 'float32', shape: [-1] }] },
  }));
  assert.equal((await call('POST', '/api/2.0/mlflow/registered-models/create', { name: 'poison' })).status, 200);
  const v = await call('POST', '/api/2.0/mlflow/model-versions/create', { name: 'poison', source: modelDir });
  assert.equal(v.json?.model_version?.status, 'READY', v.text);
});

after(async () => {
  await server?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('an input that drives a replica past its memory limit kills one replica of two, not both: 502, not retried', { timeout: 120_000 }, async () => {
  const created = await call('POST', '/api/2.0/serving-endpoints', {
    name: 'poison', config: { served_entities: [{ entity_name: 'poison', entity_version: '1', min_provisioned_concurrency: 8, max_provisioned_concurrency: 8 }] },
  });
  assert.equal(created.status, 200, created.text);
  assert.equal((await waitSettled(server.url, 'poison', 60_000)).state.ready, 'READY');
  const pids = await waitFor('2 replicas', async () => {
    const p = await replicaPids(dataDir, 'poison');
    return p.length === 2 ? p : undefined;
  });
  const r = await call('POST', '/serving-endpoints/poison/invocations', { inputs: { text: ['boom'] } });
  assert.equal(r.status, 502, r.text);
  assert.equal(r.json.error_code, 'BAD_GATEWAY');
  assert.match(r.json.message, /the request was not sent to another replica, as it may be what stopped it/);
  // The memory watchdog checks every second: a retried request would have killed the other one by now.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const survivors = [];
  for (const pid of pids) if (await alive(pid)) survivors.push(pid);
  assert.equal(survivors.length, 1, `replicas ${pids.join(', ')}: ${survivors.length} left`);
  const ok = await call('POST', '/serving-endpoints/poison/invocations', { inputs: { text: ['fine'] } });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json.predictions, [4]);
  assert.equal((await call('DELETE', '/api/2.0/serving-endpoints/poison')).status, 200);
});
