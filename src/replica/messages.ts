/** Messages between a replica's main thread and its model worker thread. */
import type { ErrorCode } from '../errors.js';
import type { FlavorName, LoadOptions } from '../flavors/index.js';
import type { OutputValue, Signature, Tensor } from '../tensor/index.js';

export interface WorkerInit {
  flavor: FlavorName;
  dir: string;
  loadOptions: LoadOptions;
}

export type WorkerRequest =
  | { type: 'predict'; id: number; inputs: Record<string, Tensor>; params: Record<string, unknown> | undefined }
  | { type: 'close' };

export type WorkerReply =
  | { type: 'ready'; signature: Signature }
  | { type: 'load-failed'; code: ErrorCode; message: string }
  | { type: 'result'; id: number; outputs: Record<string, OutputValue> }
  /** `unexpected`: the error was not raised on purpose (see `FerryError.unexpected`). */
  | { type: 'failed'; id: number; code: ErrorCode; message: string; unexpected: boolean };

/** Typed-array buffers that can move to the other thread instead of being copied. */
export function transferables(values: Record<string, Tensor | OutputValue>): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const v of Object.values(values)) {
    if (ArrayBuffer.isView(v.data) && v.data.buffer instanceof ArrayBuffer && v.data.byteLength === v.data.buffer.byteLength) {
      out.add(v.data.buffer);
    }
  }
  return [...out];
}
