/**
 * The models the bench serves, their request bodies and the answers they must give.
 *
 *   linear: the linear fixture, float32 x[-1,4] → y[-1,1] (a few ns of compute: measures overhead);
 *   mlp:    the test MLP 64 → 256 → 256 → 8 (`mlp.onnx`, ~84k weights, a few µs per row);
 *   heavy:  an MLP 512 → 4096 → 4096 → 512 (~21M weights, 84 MB: ~2 ms per row alone, much less per
 *           row in a batch: where batching pays).
 *
 * Every request carries one row. The load body is row 0 of the fixture's deterministic example
 * inputs, rounded to 4 decimals (short JSON); the expected answers come from the fixture's pure-JS
 * reference on the same float32 values.
 */
import { join } from 'node:path';
import { linearFixture, mlpFixture, mlpSmallFixture, writeFixtures, writeMlp, type OnnxFixture } from '../src/fixtures/index.js';

export const MODEL_KEYS = ['linear', 'mlp', 'heavy'] as const;
export type ModelKey = (typeof MODEL_KEYS)[number];

const HEAVY_LAYERS = [512, 4096, 4096, 512] as const;

export interface BenchModel {
  key: ModelKey;
  description: string;
  /** The .onnx file on disk. */
  path: string;
  inputWidth: number;
  /** The model's (only) input, e.g. "x". */
  inputName: string;
  /** `{"inputs": [[...]]}` with one row: what wrk posts. */
  body: string;
  /** Distinct one-row requests and their expected predictions, for the correctness check. */
  checks: Array<{ body: string; expected: number[] }>;
}

/** One row in, relative + absolute tolerance on each output (onnxruntime sums float32 in its own order). */
export function closeEnough(got: unknown, expected: number[]): boolean {
  if (!Array.isArray(got) || got.length !== expected.length) return false;
  return expected.every((e, i) => {
    const g = got[i];
    return typeof g === 'number' && Math.abs(g - e) <= 1e-4 * Math.abs(e) + 1e-5;
  });
}

function round4(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}

/** `count` distinct rows from the fixture's example inputs, rounded, with their reference outputs. */
export function requestsFor(fixture: OnnxFixture, width: number, count: number): Array<{ body: string; expected: number[] }> {
  const x = fixture.example(count).x?.data;
  if (!(x instanceof Float32Array)) throw new Error(`${fixture.file}: example input 'x' is not float32`);
  const rows = Array.from({ length: count }, (_, r) => Array.from(x.subarray(r * width, (r + 1) * width), round4));
  const y = fixture.reference({ x: { dtype: 'float32', shape: [count, width], data: Float32Array.from(rows.flat()) } }).y;
  if (y === undefined || !('shape' in y) || !(y.data instanceof Float32Array)) throw new Error(`${fixture.file}: reference output 'y' is not float32`);
  const cols = y.shape[1] ?? 1;
  return rows.map((row, r) => ({
    body: JSON.stringify({ inputs: [row] }),
    expected: Array.from((y.data as Float32Array).subarray(r * cols, (r + 1) * cols)),
  }));
}

/** Writes the model files for `keys` into `dir` and returns their descriptions. */
export async function prepareModels(dir: string, keys: readonly ModelKey[]): Promise<BenchModel[]> {
  const files = await writeFixtures(dir);
  const heavy = mlpFixture(HEAVY_LAYERS);
  const specs: Record<ModelKey, { fixture: OnnxFixture; path: () => Promise<string>; description: string }> = {
    linear: { fixture: linearFixture, path: async () => files.linear, description: 'float32 x[-1,4] → y[-1,1]' },
    mlp: { fixture: mlpSmallFixture, path: async () => files.mlp, description: 'MLP 64 → 256 → 256 → 8 (84k weights)' },
    heavy: {
      fixture: heavy,
      path: async () => {
        const path = join(dir, heavy.file);
        await writeMlp(path, HEAVY_LAYERS);
        return path;
      },
      description: 'MLP 512 → 4096 → 4096 → 512 (21M weights, 84 MB)',
    },
  };
  const out: BenchModel[] = [];
  for (const key of keys) {
    const { fixture, path, description } = specs[key];
    const width = fixture.signature.inputs[0]?.shape?.[1] ?? 0;
    const checks = requestsFor(fixture, width, 16);
    out.push({ key, description, path: await path(), inputWidth: width, inputName: fixture.signature.inputs[0]?.name ?? '', body: checks[0]!.body, checks });
  }
  return out;
}
