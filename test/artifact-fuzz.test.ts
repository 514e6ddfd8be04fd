/**
 * A bounded run of the hostile-artifact fuzzer (test/support/artifact-fuzz.ts; `npm run fuzz --
 * --artifacts` runs the long campaign): 40 seeded cases (ARTIFACT_FUZZ_CASES, ARTIFACT_FUZZ_SEED
 * override) registered against a real server; no 5xx, every version READY or FAILED_REGISTRATION
 * with a reason, the server and the fixture replica alive, RSS bounded. The first test checks that
 * the generators produce what they claim.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ARTIFACT_FUZZ_DEFAULTS, ARTIFACT_KINDS, artifactCase, artifactKind, formatArtifactReport, fuzzArtifacts } from './support/artifact-fuzz.js';

const SUITE_SEED = 20_261_206;

test('the artifact generators are deterministic and cover every kind', () => {
  const small = Array.from({ length: 200 }, (_, i) => i).filter((i) => artifactKind(SUITE_SEED, i) !== 'gguf-memory').slice(0, 15);
  for (const i of small) {
    const c = artifactCase(SUITE_SEED, i);
    assert.equal(c.kind, artifactKind(SUITE_SEED, i));
    assert.deepEqual(artifactCase(SUITE_SEED, i), c, `case ${i} is the same on every call`);
  }
  const kinds = new Set(Array.from({ length: 400 }, (_, i) => artifactKind(SUITE_SEED, i)));
  assert.deepEqual([...kinds].sort(), [...ARTIFACT_KINDS].sort());
});

test('hostile artifacts registered through the API: no 5xx, a final status with a reason, server and replica up, RSS bounded', { timeout: 300_000 }, async () => {
  const seed = process.env.ARTIFACT_FUZZ_SEED === undefined ? SUITE_SEED : Number(process.env.ARTIFACT_FUZZ_SEED);
  const cases = Number(process.env.ARTIFACT_FUZZ_CASES ?? 40);
  const report = await fuzzArtifacts({ ...ARTIFACT_FUZZ_DEFAULTS, seed, cases, log: (line) => console.log(line) });
  console.log(formatArtifactReport(report));
  assert.deepEqual(report.problems, []);
  assert.ok(report.ready > 0 && report.failed > 0, 'both outcomes were exercised');
});
