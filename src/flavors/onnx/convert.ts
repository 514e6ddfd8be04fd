/**
 * Tensor ↔ onnxruntime tensor conversion. On the hot path: typed arrays pass through without a
 * copy; only bool outputs (Uint8Array → boolean[]) and float16 (carried as float32 in Ferry, as
 * IEEE half bits in onnxruntime) are converted.
 */
import ort from 'onnxruntime-node';
import { FerryError } from '../../errors.js';
import { float32ToHalfBits, halfBitsToFloat32, isDType } from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';


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
