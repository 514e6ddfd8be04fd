/** Finishing registrations a crash interrupted: all of them alone, only old ones on a shared store. */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { openArtifactStore } from '../src/artifacts/index.js';
import { linearFixture } from '../src/fixtures/index.js';
import { Inspector, Registry } from '../src/registry/index.js';
import { openStore } from '../src/store/index.js';
import { tempDir } from './support/index.js';

test('recoverPending(minAgeMs) finishes only versions pending at least that long; 0 finishes them all', async () => {
  const dir = await tempDir();
  try {
    let nowMs = 1_000_000;
    const store = await openStore({ kind: 'sqlite', path: path.join(dir, 'ferry.db') });
    const artifacts = await openArtifactStore({ kind: 'local', root: path.join(dir, 'artifacts') });
    const inspector = new Inspector({ memoryLimitBytes: 256 << 20, timeoutMs: 30_000, readRoots: [path.join(dir, 'artifacts')] });
    const registry = new Registry(store, artifacts, { maxUploadBytes: 1 << 30, now: () => nowMs, inspector });
    const source = path.join(dir, 'linear.onnx');
    await fsp.writeFile(source, linearFixture.build());
    // A version as a crash leaves it: its row written, its artifact never copied.
    await store.createRegisteredModel({ name: 'm', description: '', tags: {} }, nowMs);
    await store.createModelVersion({ name: 'm', source, runId: '', description: '', tags: {} }, nowMs);
    nowMs += 30 * 60 * 1000;
    await registry.recoverPending(60 * 60 * 1000);
    assert.equal((await store.getModelVersion('m', 1))?.status, 'PENDING_REGISTRATION', 'half an hour old: maybe still in progress on another server');
    nowMs += 31 * 60 * 1000;
    await registry.recoverPending(60 * 60 * 1000);
    assert.equal((await store.getModelVersion('m', 1))?.status, 'READY');
    await store.createModelVersion({ name: 'm', source, runId: '', description: '', tags: {} }, nowMs);
    await registry.recoverPending();
    assert.equal((await store.getModelVersion('m', 2))?.status, 'READY', 'a server alone with its store finishes every pending version');
    await store.close();
    await inspector.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
