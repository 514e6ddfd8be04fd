/**
 * The flavor contract: every `Flavor` (onnx, transformers, js, llm, python, xgboost) runs this suite
 * (test/flavors.test.ts). It checks what the runtime, the replica and the registry rely on without
 * knowing the flavor's name: the flavor is the one `getFlavor` names, its capabilities are the
 * declared ones and consistent with how replicas are started, and inspection reads a signature from
 * metadata (no model is loaded) and refuses an artifact that is not one with a 400, never a crash.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { FerryError } from '../../src/errors.js';
import { FLAVOR_CAPABILITIES, getFlavor, type FlavorName } from '../../src/flavors/index.js';
import { isDType } from '../../src/tensor/index.js';
import { tempDir } from '../support/index.js';

export interface FlavorHarness {
  name: FlavorName;
  /** Writes a valid artifact of the flavor under `dir`; returns its directory and model file. */
  write(dir: string): Promise<{ dir: string; modelFile: string }>;
}

export function flavorContract(h: FlavorHarness): void {
  describe(`flavor contract: ${h.name}`, () => {
    test('getFlavor returns the flavor of that name, with its declared capabilities', async () => {
      const flavor = await getFlavor(h.name);
      assert.equal(flavor.name, h.name);
      assert.equal(flavor.capabilities, FLAVOR_CAPABILITIES[h.name]);
      assert.ok(flavor.defaultModelFile !== '' && !path.isAbsolute(flavor.defaultModelFile));
    });

    test('capabilities are consistent with how replicas are started', () => {
      const c = FLAVOR_CAPABILITIES[h.name];
      // A warm-pool process starts with addons (a flavor that needs none may still use it), without child processes or system reads.
      if (c.warmPool) assert.ok(!c.childProcesses && c.systemReads.length === 0 && !c.modelReadAsReplicaUser, 'a pooled flavor needs only the pool\'s rights');
      // Code that comes with a model never gets native addons in the replica, nor a pool process.
      if (c.runsUserCode) assert.ok(!c.nativeAddons && !c.warmPool, 'user code gets neither addons nor the pool');
      // A model read as the replica user is read by a process the replica starts.
      if (c.modelReadAsReplicaUser) assert.ok(c.childProcesses);
      assert.ok(c.systemReads.every((p) => path.isAbsolute(p)));
      assert.match(c.platform, /^[a-z_]+$/);
    });

    test('inspect reads a signature from metadata', async () => {
      const dir = await tempDir();
      try {
        const a = await h.write(dir);
        const signature = await (await getFlavor(h.name)).inspect(a.dir, a.modelFile);
        assert.ok(signature.inputs.length > 0);
        assert.equal(new Set(signature.inputs.map((s) => s.name)).size, signature.inputs.length, 'input names are unique');
        for (const s of signature.inputs) {
          assert.ok(isDType(s.dtype), `input ${s.name} dtype ${s.dtype}`);
          assert.ok(s.shape === undefined || s.shape.every((d) => Number.isInteger(d) && d >= -1), `input ${s.name} shape`);
        }
        for (const s of signature.outputs) assert.ok(isDType(s.dtype) || s.dtype === 'map' || s.dtype === 'json', `output ${s.name} dtype ${s.dtype}`);
      } finally {
        await fsp.rm(dir, { recursive: true, force: true });
      }
    });

    test('inspect refuses an artifact that is not one with a FerryError (400), not a crash', async () => {
      const dir = await tempDir();
      try {
        const flavor = await getFlavor(h.name);
        await fsp.writeFile(path.join(dir, flavor.defaultModelFile.split('/').pop()!), 'not a model');
        await assert.rejects(flavor.inspect(dir, flavor.defaultModelFile), (err: unknown) => {
          assert.ok(err instanceof FerryError, `a FerryError, got ${String(err)}`);
          assert.equal(err.status, 400, err.message);
          return true;
        });
      } finally {
        await fsp.rm(dir, { recursive: true, force: true });
      }
    });
  });
}
