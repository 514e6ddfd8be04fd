/**
 * Tensor → JSON encoding shared by every protocol. Elements come out as plain JSON values: BigInt
 * (int64/uint64) becomes a Number, because `JSON.stringify` throws on BigInt; values beyond 2^53
 * round to the nearest double, exactly as any JSON number does in a JavaScript client.
 */
import type { Tensor, TensorData } from '../tensor/index.js';

/** A JSON-safe element value. */
export type JsonScalar = number | boolean | string;

function element(data: TensorData, i: number): JsonScalar {
  const v = data[i]!;
  return typeof v === 'bigint' ? Number(v) : v;
}

/** The tensor's elements as one flat JSON array (row-major). */
export function flatArray(t: Tensor): JsonScalar[] {
  const n = t.data.length;
  const out = new Array<JsonScalar>(n);
  for (let i = 0; i < n; i++) out[i] = element(t.data, i);
  return out;
}

/** Elements per step of each dimension: [2, 3, 4] → [12, 4, 1]. */
function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let step = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    s[d] = step;
    step *= shape[d]!;
  }
  return s;
}

function nest(data: TensorData, shape: readonly number[], steps: readonly number[], depth: number, offset: number): unknown {
  if (depth === shape.length) return element(data, offset);
  const n = shape[depth]!;
  const out = new Array<unknown>(n);
  if (depth + 1 === shape.length) {
    for (let i = 0; i < n; i++) out[i] = element(data, offset + i);
  } else {
    const step = steps[depth]!;
    for (let i = 0; i < n; i++) out[i] = nest(data, shape, steps, depth + 1, offset + i * step);
  }
  return out;
}

/** The whole tensor as nested JSON arrays: shape [2, 3] → `[[a, b, c], [d, e, f]]`; shape [] → a scalar. */
export function nestedArray(t: Tensor): unknown {
  return nest(t.data, t.shape, strides(t.shape), 0, 0);
}

/** Row `r` of a tensor of rank ≥ 1: a scalar for shape [N], a nested array for [N, ...]. */
export function rowValues(t: Tensor): (r: number) => unknown {
  const steps = strides(t.shape);
  const rowSize = steps[0] ?? 1;
  return (r) => nest(t.data, t.shape, steps, 1, r * rowSize);
}
