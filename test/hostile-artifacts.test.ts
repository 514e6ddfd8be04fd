/**
 * Hostile artifacts (issue 17), each written as the attack against a real `ferry server` child:
 * ONNX protobuf bombs through the upload API, bulk-create and the transformers flavor; an
 * artifact that exhausts the inspector's memory; the same left PENDING_REGISTRATION by a crash
 * (two restarts, no loop); a GGUF with a 32 MiB header; a tar archive with a 32 MiB entry. The
 * health endpoint is probed throughout each attack and must answer 200 every time.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { tarFiles } from '../src/client/tar.js';
import { readGgufHeader } from '../src/flavors/llm/index.js';
import { familyFixture, linearFixture } from '../src/fixtures/index.js';
import type { FerryError } from '../src/errors.js';
import { Inspector } from '../src/registry/index.js';
import { openStore } from '../src/store/index.js';
import { ggufStringArray, onnxNodeBomb, writeTransformersDir } from './support/hostile.js';
import { kill, Processes, request, tempDir } from './support/index.js';

let dir: string;
let dataDir: string;
let configFile: string;
const processes = new Processes();
let server: { child: ChildProcess; url: string };

/** A lower inspector memory limit than the default keeps the memory bomb small (160 MiB). */
const INSPECTOR_MEMORY_LIMIT = '128MiB';

async function startServer(): Promise<void> {
  server = await processes.startServer(dataDir, {}, ['--config', configFile]);
}

before(async () => {
  dir = await tempDir('ferry-hostile-');
  dataDir = path.join(dir, 'data');
  configFile = path.join(dir, 'config.json');
  await fsp.writeFile(configFile, JSON.stringify({ warmPoolSize: 0, inspectorMemoryLimit: INSPECTOR_MEMORY_LIMIT }));
  await fsp.writeFile(path.join(dir, 'linear.onnx'), linearFixture.build());
  await startServer();
});

after(async () => {
  await processes.killAll();
  await fsp.rm(dir, { recursive: true, force: true });
});

const call = (method: string, p: string, json?: unknown) => request({ url: server.url, method, path: p, ...(json === undefined ? {} : { json }) });

async function rssBytes(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1]) * 1024;
}

/**
 * Probes GET /v2/health/live back to back while `attack` runs; returns the attack's result, the
 * probes' latencies (ms) and every non-200 status seen.
 */
async function probed<T>(attack: () => Promise<T>): Promise<{ result: T; p99Ms: number; probes: number; failures: string[] }> {
  const latencies: number[] = [];
  const failures: string[] = [];
  let done = false;
  const loop = (async () => {
    while (!done) {
      const t0 = performance.now();
      const r = await request({ url: server.url, path: '/v2/health/live', token: null }).catch((err: unknown) => ({ status: 0, text: String(err) }));
      latencies.push(performance.now() - t0);
      if (r.status !== 200) failures.push(`${r.status} ${r.text}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  try {
    const result = await attack();
    done = true;
    await loop;
    const sorted = [...latencies].sort((a, b) => a - b);
    return { result, p99Ms: sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? NaN, probes: sorted.length, failures };
  } finally {
    done = true;
    await loop;
  }
}

/** A directory holding a GGUF that keeps 160 MiB of strings in the inspector's memory (written once). */
async function memoryBomb(): Promise<string> {
  const bombDir = path.join(dir, 'gguf-bomb');
  if (await fsp.stat(bombDir).catch(() => undefined)) return bombDir;
  await fsp.mkdir(bombDir);
  await fsp.writeFile(path.join(bombDir, 'model.gguf'), ggufStringArray(40, 4 * 2 ** 20));
  return bombDir;
}

/** Registers `source` as a new version of `name` and returns the version record. */
async function register(name: string, source: string): Promise<{ status: string; status_message: string; version: string }> {
  await call('POST', '/api/2.0/mlflow/registered-models/create', { name });
  const r = await call('POST', '/api/2.0/mlflow/model-versions/create', { name, source });
  assert.equal(r.status, 200, r.text);
  return r.json.model_version;
}

test('ONNX protobuf bombs (12 MB and 80 MB of empty nodes) via upload, a server path, bulk-create and the transformers flavor: FAILED_REGISTRATION naming the node limit, server RSS bounded, health answered', { timeout: 180_000 }, async () => {
  const bomb12 = onnxNodeBomb(6_000_000);
  const bomb80 = path.join(dir, 'bomb80.onnx');
  await fsp.writeFile(bomb80, onnxNodeBomb(40_000_000));
  const transformers = path.join(dir, 'hf-bomb');
  await writeTransformersDir(transformers, bomb12);
  const pid = server.child.pid as number;
  const rssBefore = await rssBytes(pid);
  const { result, p99Ms, probes, failures } = await probed(async () => {
    const put = await request({ url: server.url, method: 'PUT', path: '/api/2.0/mlflow-artifacts/artifacts/bomb/model.onnx', body: bomb12 });
    assert.equal(put.status, 200, put.text);
    const uploaded = await register('bomb-upload', 'mlflow-artifacts:/bomb');
    const big = await register('bomb-80', bomb80);
    const hf = await register('bomb-hf', transformers);
    // bulk-create bodies are JSON (16 MiB by default): a 6 MB bomb, 3 million nodes.
    const bulk = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', {
      models: [
        { name: 'bulk-bomb', content_base64: onnxNodeBomb(3_000_000).toString('base64') },
        { name: 'bulk-fine', content_base64: Buffer.from(familyFixture(1).build()).toString('base64') },
      ],
    });
    return { uploaded, big, hf, bulk };
  });
  for (const v of [result.uploaded, result.big, result.hf]) {
    assert.equal(v.status, 'FAILED_REGISTRATION');
    assert.match(v.status_message, /Invalid ONNX model 'onnx\/model\.onnx'|Invalid ONNX model 'model\.onnx'|Invalid ONNX model 'bomb80\.onnx'/);
    assert.match(v.status_message, /the graph has more than 1000000 nodes/);
  }
  assert.equal(result.bulk.status, 200, result.bulk.text);
  assert.equal(result.bulk.json.results[0].status, 'FAILED_REGISTRATION');
  assert.match(result.bulk.json.results[0].message, /more than 1000000 nodes/);
  assert.deepEqual(result.bulk.json.results[1], { name: 'bulk-fine', status: 'READY', version: '1' });
  const rssGrowth = (await rssBytes(pid)) - rssBefore;
  console.log(`protobuf bombs: health p99 ${p99Ms.toFixed(1)} ms over ${probes} probes; server RSS ${(rssBefore / 2 ** 20).toFixed(0)} MiB, growth ${(rssGrowth / 2 ** 20).toFixed(1)} MiB`);
  assert.deepEqual(failures, [], 'the health endpoint answered 200 throughout');
  // Before: ~1 GB of growth for the 12 MB file alone. The server only copies and hashes the bytes now
  // (and holds the 16 MiB bulk-create body while it is decoded).
  assert.ok(rssGrowth < 96 * 2 ** 20, `server RSS grew by ${rssGrowth} bytes`);
  assert.ok(p99Ms < 1000, `health p99 ${p99Ms} ms: no multi-second stall (4 s before)`);
  // A good model registers right after.
  assert.equal((await register('after-bombs', path.join(dir, 'linear.onnx'))).status, 'READY');
});

test('an artifact that exhausts the inspector\'s memory: FAILED_REGISTRATION with the limit, the inspector replaced, the next version READY', { timeout: 120_000 }, async () => {
  const bombDir = await memoryBomb();
  const { result, p99Ms, failures } = await probed(() => register('memory-bomb', bombDir));
  assert.equal(result.status, 'FAILED_REGISTRATION');
  assert.match(result.status_message, /inspection exceeded its memory limit \(128 MiB\)/);
  console.log(`memory bomb: health p99 ${p99Ms.toFixed(1)} ms`);
  assert.deepEqual(failures, []);
  assert.equal((await register('after-memory-bomb', path.join(dir, 'linear.onnx'))).status, 'READY');
});

test('an inspection past its time limit fails with the limit, and the inspector serves the next artifact', { timeout: 60_000 }, async () => {
  const artifacts = path.join(dir, 'timing');
  await fsp.mkdir(path.join(artifacts, 'slow'), { recursive: true });
  await fsp.mkdir(path.join(artifacts, 'fine'), { recursive: true });
  // 3.7 million tokens to skip: ~0.4 s of reading, far past a 1 ms limit.
  await fsp.writeFile(path.join(artifacts, 'slow', 'model.gguf'), ggufStringArray(3_700_000, 1));
  await fsp.writeFile(path.join(artifacts, 'fine', 'model.onnx'), linearFixture.build());
  const strict = new Inspector({ memoryLimitBytes: 256 * 2 ** 20, timeoutMs: 1, readRoots: [artifacts], processes: 1 });
  try {
    await assert.rejects(strict.inspect(path.join(artifacts, 'slow')), (err: FerryError) => {
      assert.equal(err.code, 'INVALID_PARAMETER_VALUE');
      assert.match(err.message, /inspection took longer than its time limit \(1 ms\)/);
      return true;
    });
  } finally {
    await strict.close();
  }
  const inspector = new Inspector({ memoryLimitBytes: 256 * 2 ** 20, timeoutMs: 30_000, readRoots: [artifacts], processes: 1 });
  try {
    // The permission model: an artifact outside the read roots cannot be read at all.
    await assert.rejects(inspector.inspect(path.dirname(artifacts)), /No model found|ERR_ACCESS_DENIED|cannot read/);
    assert.equal((await inspector.inspect(path.join(artifacts, 'fine'))).flavor, 'onnx');
  } finally {
    await inspector.close();
  }
});

test('a version left PENDING_REGISTRATION on that artifact (a crash mid-inspection): the server starts, answers, marks it FAILED_REGISTRATION; a second restart does the same', { timeout: 120_000 }, async () => {
  assert.equal(await kill(server.child, 'SIGKILL'), null);
  // What a crash mid-inspection leaves: the version row, PENDING_REGISTRATION.
  const store = await openStore({ kind: 'sqlite', path: path.join(dataDir, 'ferry.db') });
  await store.createRegisteredModel({ name: 'pending-bomb', description: '', tags: {} }, Date.now());
  await store.createModelVersion({ name: 'pending-bomb', source: await memoryBomb(), runId: '', description: '', tags: {} }, Date.now());
  await store.close();
  for (const start of ['first', 'second']) {
    await startServer();
    assert.equal((await call('GET', '/v2/health/ready')).status, 200, `${start} start answers`);
    const v = await call('GET', '/api/2.0/mlflow/model-versions/get?name=pending-bomb&version=1');
    assert.equal(v.json.model_version.status, 'FAILED_REGISTRATION', `${start} start`);
    assert.match(v.json.model_version.status_message, /exceeded its memory limit/);
    if (start === 'first') assert.equal(await kill(server.child, 'SIGKILL'), null);
  }
});

test('a GGUF with a 32 MiB header (3.7 million 1-byte tokens) registers READY without stalling the server', { timeout: 120_000 }, async () => {
  const ggufDir = path.join(dir, 'gguf-header');
  await fsp.mkdir(ggufDir);
  await fsp.writeFile(path.join(ggufDir, 'model.gguf'), ggufStringArray(3_700_000, 1));
  const t0 = performance.now();
  const { result, p99Ms, failures } = await probed(() => register('gguf-header', ggufDir));
  console.log(`32 MiB GGUF header: registered in ${(performance.now() - t0).toFixed(0)} ms, health p99 ${p99Ms.toFixed(1)} ms`);
  assert.equal(result.status, 'READY', result.status_message);
  assert.deepEqual(failures, []);
  assert.ok(p99Ms < 1000, `health p99 ${p99Ms} ms (660 ms stalls before)`);
  // The reader itself, in this process: one awaited read per value cost 3.2 s of CPU (6.7 s wall)
  // for this file on the 2-core test machine; chunked synchronous reads ~0.4 s.
  const cpu0 = process.cpuUsage();
  const header = readGgufHeader(path.join(ggufDir, 'model.gguf'));
  const cpu = process.cpuUsage(cpu0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  console.log(`32 MiB GGUF header: read in ${cpuS.toFixed(2)} s of CPU`);
  assert.deepEqual(header.metadata.get('tokenizer.ggml.tokens'), { arrayLength: 3_700_000 });
  assert.ok(cpuS < 2, `${cpuS} s of CPU`);
});

test('ferry models import reads a .tar.gz with a 32 MiB entry in linear time', { timeout: 120_000 }, async () => {
  const src = path.join(dir, 'tar-src');
  await fsp.mkdir(src);
  const big = Buffer.alloc(32 * 2 ** 20, 0);
  big.write('ferry', 12345);
  await fsp.writeFile(path.join(src, 'big.bin'), big);
  await fsp.writeFile(path.join(src, 'after.txt'), 'after');
  const archive = path.join(dir, 'big.tar.gz');
  await new Promise<void>((resolve, reject) => execFile('tar', ['-czf', archive, '-C', src, 'big.bin', 'after.txt'], (err) => (err === null ? resolve() : reject(new Error(err.message)))));
  assert.ok((await fsp.stat(archive)).size < 100_000, 'the archive is tiny (it compresses zeros)');
  const cpu0 = process.cpuUsage();
  const files: Array<{ path: string; content: Buffer }> = [];
  for await (const f of tarFiles(archive, { want: () => true, maxFileBytes: 64 * 2 ** 20 })) files.push(f);
  const cpu = process.cpuUsage(cpu0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  console.log(`tar with a 32 MiB entry: ${cpuS.toFixed(2)} s of CPU`);
  assert.deepEqual(files.map((f) => f.path), ['big.bin', 'after.txt']);
  assert.ok(files[0]?.content.equals(big));
  assert.equal(files[1]?.content.toString(), 'after');
  // Quadratic joins took 23 s here; linear reading takes a fraction of a second. The bound is loose
  // on purpose (a loaded machine), yet far below the quadratic cost.
  assert.ok(cpuS < 5, `${cpuS} s of CPU`);
  // A wanted entry past the bound is refused by its header (a gzip bomb declares what it likes);
  // an unwanted one streams past without being held.
  await assert.rejects(async () => {
    for await (const f of tarFiles(archive, { want: () => true, maxFileBytes: 2 ** 20 })) assert.fail(`read ${f.path}`);
  }, /'big\.bin' declares 33554432 bytes, more than the 1048576 allowed/);
  const only: string[] = [];
  for await (const f of tarFiles(archive, { want: (p) => p.endsWith('.txt'), maxFileBytes: 2 ** 20 })) only.push(f.path);
  assert.deepEqual(only, ['after.txt']);
});
