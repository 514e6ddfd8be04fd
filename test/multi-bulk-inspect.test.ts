/**
 * Bulk registration's batched inspection and durability step, with real inspector processes, a
 * real SQLite store and a real local artifact store: a hostile artifact inside a batch fails
 * alone (the batch is retried one artifact per frame after the process dies); one file system
 * sync per call (`sync -f <store root>`) before the transaction, and a failed sync leaves no row
 * and no artifact; without a `sync` program each file is fsynced instead.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { openArtifactStore, type ArtifactStore } from '../src/artifacts/index.js';
import { familyFixture } from '../src/fixtures/index.js';
import { Inspector, Registry } from '../src/registry/index.js';
import { openStore, type MetadataStore } from '../src/store/index.js';
import { ggufStringArray } from './support/hostile.js';
import { tempDir } from './support/index.js';

let dir: string;

before(async () => {
  dir = await tempDir('ferry-bulk-inspect-');
});

after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a memory bomb inside a batch of 70 fails alone: the others of its frame are retried one per frame and pass', { timeout: 120_000 }, async () => {
  const root = path.join(dir, 'batch');
  const dirs: string[] = [];
  for (let i = 0; i < 70; i++) {
    const d = path.join(root, `m-${i}`);
    await fsp.mkdir(d, { recursive: true });
    // The bomb (160 MiB of GGUF strings, over a 128 MiB limit) sits in the first frame of 64.
    await fsp.writeFile(i === 5 ? path.join(d, 'model.gguf') : path.join(d, 'model.onnx'), i === 5 ? ggufStringArray(40, 4 * 2 ** 20) : familyFixture(i).build());
    dirs.push(d);
  }
  const inspector = new Inspector({ memoryLimitBytes: 128 * 2 ** 20, timeoutMs: 60_000, readRoots: [root], processes: 1 });
  try {
    const results = await inspector.inspectMany(dirs);
    assert.equal(results.length, 70);
    results.forEach((r, i) => {
      if (i === 5) {
        assert.ok(!r.ok, 'the bomb fails');
        assert.match(r.error.message, /exceeded its memory limit \(128 MiB\)/);
      } else {
        assert.ok(r.ok, `artifact ${i}: ${r.ok ? '' : r.error.message}`);
        assert.equal(r.inspection.flavor, 'onnx');
      }
    });
    // The replacement process serves the next call.
    assert.equal((await inspector.inspect(dirs[0] as string)).flavor, 'onnx');
  } finally {
    await inspector.close();
  }
});

/** A registry over a fresh SQLite store and local artifact store under `name`. */
async function registry(name: string): Promise<{ reg: Registry; store: MetadataStore; artifacts: ArtifactStore; root: string; close: () => Promise<void> }> {
  const root = path.join(dir, name, 'artifacts');
  const store = await openStore({ kind: 'sqlite', path: path.join(dir, name, 'ferry.db') });
  const artifacts = await openArtifactStore({ kind: 'local', root });
  const inspector = new Inspector({ memoryLimitBytes: 256 * 2 ** 20, timeoutMs: 30_000, readRoots: [root] });
  const reg = new Registry(store, artifacts, { maxUploadBytes: 2 ** 20, now: () => Date.now(), inspector });
  return { reg, store, artifacts, root, close: async () => { await inspector.close(); await store.close(); } };
}

/** Runs `fn` with PATH starting at a directory whose `sync` is `script` (none when undefined). */
async function withSync<T>(name: string, script: string | undefined, fn: () => Promise<T>): Promise<T> {
  const bin = path.join(dir, name, 'bin');
  await fsp.mkdir(bin, { recursive: true });
  if (script !== undefined) await fsp.writeFile(path.join(bin, 'sync'), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  const saved = process.env.PATH;
  // Without a script, PATH is only that empty directory: `sync` cannot be found.
  process.env.PATH = script === undefined ? bin : `${bin}:${saved ?? ''}`;
  try {
    return await fn();
  } finally {
    process.env.PATH = saved;
  }
}

const models = (prefix: string, n: number) => Array.from({ length: n }, (_v, i) => ({ name: `${prefix}-${i}`, file: 'model.onnx', content: familyFixture(i).build() }));

test('one file system sync per bulk call, on the store root, before the rows commit', { timeout: 60_000 }, async () => {
  const r = await registry('sync-once');
  try {
    const log = path.join(dir, 'sync-once', 'sync.log');
    // The fake sync records its arguments and the time (ms) it ran, then runs the real one.
    const results = await withSync('sync-once', `echo "$(date +%s%3N) $@" >> ${log}; command -p sync "$@"`, () => r.reg.createVersionsBulk(models('d', 40), 'admin'));
    assert.deepEqual(results.map((x) => x.status), Array(40).fill('READY'));
    const lines = (await fsp.readFile(log, 'utf8')).trim().split('\n');
    assert.equal(lines.length, 1, 'one sync for 40 files');
    const [syncedAtMs, ...args] = (lines[0] ?? '').split(' ');
    assert.deepEqual(args, ['-f', r.root]);
    // The rows are stamped with the time of their transaction: after the sync.
    assert.ok(Number(syncedAtMs) <= (await r.reg.getVersion('d-0', 1)).createdMs, 'synced before the transaction');
    for (let i = 0; i < 40; i += 13) {
      const v = await r.reg.getVersion(`d-${i}`, 1);
      assert.equal(v.status, 'READY');
      assert.deepEqual(await fsp.readFile(path.join(r.root, v.artifact?.path ?? '', 'model.onnx')), Buffer.from(familyFixture(i).build()));
    }
  } finally {
    await r.close();
  }
});

test('a failed sync fails the call: no version row, no artifact left; without a sync program each file is fsynced and the call succeeds', { timeout: 60_000 }, async () => {
  const r = await registry('sync-fails');
  try {
    await assert.rejects(withSync('sync-fails', 'exit 1', () => r.reg.createVersionsBulk(models('e', 10), 'admin')), /sync -f .* failed/);
    for (let i = 0; i < 10; i++) assert.equal(await r.store.getModelVersion(`e-${i}`, 1), undefined);
    assert.deepEqual(await fsp.readdir(path.join(r.root, 'models', 'e-0')).catch(() => []), [], 'no artifact directory is left');
    const results = await withSync('sync-missing', undefined, () => r.reg.createVersionsBulk(models('e', 10), 'admin'));
    assert.deepEqual(results.map((x) => x.status), Array(10).fill('READY'));
  } finally {
    await r.close();
  }
});
