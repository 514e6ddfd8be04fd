/**
 * The replica ↔ Python worker link codec (src/flavors/python/link.ts) against the real worker's
 * framing (python/ferry_worker.py): a frame encoded here is decoded by Python's reader into numpy
 * arrays and written back by its writer, byte for byte what the replica then decodes; frames split
 * at every byte boundary reassemble; malformed answers are model errors, not crashes.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { FerryError } from '../src/errors.js';
import { decodeOutputs, encodeFrame, FrameReader } from '../src/flavors/python/link.js';
import type { Tensor } from '../src/tensor/index.js';
import { ROOT } from './support/index.js';

const TENSORS: Record<string, Tensor> = {
  f64: { dtype: 'float64', shape: [2, 3], data: new Float64Array([1.5, -2, 3, 4, 5e300, -0]) },
  i64: { dtype: 'int64', shape: [3], data: new BigInt64Array([1n, -(2n ** 62n), 7n]) },
  u8: { dtype: 'uint8', shape: [5], data: new Uint8Array([0, 1, 254, 255, 7]) },
  flag: { dtype: 'bool', shape: [2], data: [true, false] },
  text: { dtype: 'string', shape: [2], data: ['a', 'ünï'] },
};

/** Python reads each frame with the worker's own reader and answers the arrays back with its writer. */
const ECHO = `
import socket, sys
sys.path.insert(0, sys.argv[1])
import ferry_worker as fw
sock = socket.socket(fileno=3)
while True:
    try:
        header, payload = fw.read_frame(sock)
    except EOFError:
        break
    arrays = {e["name"]: fw.tensor_of(e, payload) for e in header["inputs"]}
    numeric = {k: v for k, v in arrays.items() if v.dtype != object}
    entries, buffers = [], []
    offset = 0
    for name, a in numeric.items():
        entries.append({"name": name, "dtype": "bool" if a.dtype.name == "bool" else a.dtype.name, "shape": list(a.shape), "offset": offset, "bytes": a.nbytes})
        pad = (a.nbytes + 7) // 8 * 8 - a.nbytes
        buffers += [memoryview(a).cast("B"), memoryview(b"\\0" * pad)]
        offset += a.nbytes + pad
    entries.append({"name": "text", "rows": arrays["text"].tolist()})
    fw.write_frame(sock, {"id": header["id"], "outputs": entries}, buffers)
`;

describe('python link', () => {
  test("tensors round-trip through the worker's reader and writer, as numpy views and back", async () => {
    const child = spawn('/usr/bin/python3', ['-c', ECHO, path.join(ROOT, 'python')], { stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
    const channel = child.stdio[3] as Socket;
    const reader = new FrameReader();
    try {
      for (let id = 1; id <= 3; id++) {
        const answer = new Promise<ReturnType<FrameReader['push']>[number]>((resolve) => {
          const onData = (chunk: Buffer): void => {
            const frames = reader.push(chunk);
            if (frames.length > 0) {
              channel.off('data', onData);
              resolve(frames[0]!);
            }
          };
          channel.on('data', onData);
        });
        for (const b of encodeFrame({ op: 'predict', id, params: null }, TENSORS)) channel.write(b);
        const { header, payload } = await answer;
        assert.equal(header.id, id);
        const out = decodeOutputs(header.outputs, payload);
        for (const name of ['f64', 'i64', 'u8', 'flag'] as const) assert.deepEqual(out[name], TENSORS[name], name);
        assert.deepEqual(out.text, { dtype: 'json', data: ['a', 'ünï'] });
      }
    } finally {
      channel.end();
      await new Promise((r) => child.once('exit', r));
    }
  });

  test('frames split at any byte reassemble; several in one chunk all come out', () => {
    const frame = Buffer.concat([...encodeFrame({ id: 1 }, TENSORS), ...encodeFrame({ id: 2 })]);
    for (let cut = 0; cut <= frame.length; cut++) {
      const reader = new FrameReader();
      const frames = [...reader.push(frame.subarray(0, cut)), ...reader.push(frame.subarray(cut))];
      assert.deepEqual(frames.map((f) => f.header.id), [1, 2], `cut at ${cut}`);
    }
  });

  test('a bad length or header throws (the replica then exits); malformed outputs are MODEL_ERROR', () => {
    assert.throws(() => new FrameReader().push(Buffer.from([0, 0, 0, 0])), /bad frame length 0/);
    const head = Buffer.from('[1]');
    const notObject = Buffer.alloc(8 + head.length);
    notObject.writeUInt32LE(4 + head.length, 0);
    notObject.writeUInt32LE(head.length, 4);
    head.copy(notObject, 8);
    assert.throws(() => new FrameReader().push(notObject), /not an object/);
    const bad = (outputs: unknown, payload = Buffer.alloc(8)): void => {
      assert.throws(() => decodeOutputs(outputs, payload), (err: unknown) => err instanceof FerryError && err.code === 'MODEL_ERROR');
    };
    bad('nope');
    bad([{ name: 'x', dtype: 'float128', shape: [1], offset: 0, bytes: 8 }]);
    bad([{ name: 'x', dtype: 'float64', shape: [2], offset: 0, bytes: 16 }]);
    bad([{ name: 'x', dtype: 'float64', shape: [1], offset: 4, bytes: 8 }]);
    bad([{ name: 'x', dtype: 'float32', shape: [1], offset: 0, bytes: 8 }]);
    bad([{ dtype: 'float64', shape: [1], offset: 0, bytes: 8 }]);
  });
});
