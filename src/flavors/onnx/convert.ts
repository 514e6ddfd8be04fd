/**
 * Tensor ↔ onnxruntime tensor conversion. On the hot path: typed arrays pass through without a
 * copy; only bool outputs (Uint8Array → boolean[]) and float16 (carried as float32 in Ferry, as
 * IEEE half bits in onnxruntime) are converted.
 */
import ort from 'onnxruntime-node';
import { FerryError } from '../../errors.js';
import { isDType } from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';

const scratch = new DataView(new ArrayBuffer(4));

/** Rounds a float32 value to the nearest IEEE half (ties to even) and returns its 16 bits. */
export function float32ToHalfBits(value: number): number {
  scratch.setFloat32(0, value);
  const x = scratch.getUint32(0);
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // Inf, NaN
  const e = exp - 127 + 15; // rebias 8-bit → 5-bit exponent
  if (e >= 0x1f) return sign | 0x7c00; // overflow → Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflows to ±0
    const m = mant | 0x800000; // implicit leading 1
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rounded = (m + half - 1 + ((m >>> shift) & 1)) >>> shift;
    return sign | rounded;
  }
  // Round the 23-bit mantissa to 10 bits, ties to even; a carry bumps the exponent correctly.
  const bits = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return sign | (bits + (rest > 0x1000 || (rest === 0x1000 && (bits & 1) === 1) ? 1 : 0));
}

/** The float value of IEEE half `bits`. */
export function halfBitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // subnormal
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Wraps a Ferry tensor for onnxruntime, sharing its storage where the layouts agree. */
export function toOrtTensor(t: Tensor): ort.Tensor {
  if (t.dtype === 'float16') {
    const halves = Uint16Array.from(t.data as Float32Array, (v) => float32ToHalfBits(Number(v)));
    return new ort.Tensor('float16', halves, t.shape);
  }
  return new ort.Tensor(t.dtype, t.data, t.shape);
}

/** Copies an onnxruntime output into a Ferry tensor (typed arrays are taken over, not copied). */
export function fromOrtTensor(name: string, t: ort.Tensor): Tensor {
  const shape = Array.from(t.dims);
  switch (t.type) {
    case 'bool':
      return { dtype: 'bool', shape, data: Array.from(t.data as Uint8Array, (v) => v !== 0) };
    case 'float16':
      return { dtype: 'float16', shape, data: Float32Array.from(t.data as Uint16Array, halfBitsToFloat32) };
    default:
      if (!isDType(t.type)) throw new FerryError('MODEL_ERROR', `Output '${name}' has element type ${t.type}, which Ferry cannot return.`);
      return { dtype: t.type, shape, data: t.data };
  }
}
