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
import { decodeOutputs, encodeFrame, FrameReader, type Frame } from '../src/flavors/python/link.js';
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
reader = fw.FrameReader(sock)
while True:
    try:
        header, payload = reader.read()
    except EOFError:
        break
    arrays = {e["name"]: fw.tensor_of(e, payload) for e in header["inputs"]}
    assert all(a.flags.aligned for a in arrays.values()), "a tensor is not aligned in memory"
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

/** The echo worker on fd 3, and `frames(n)`: the next n answers it writes. */
function startEcho(): { channel: Socket; frames: (n: number) => Promise<Frame[]>; stop: () => Promise<void> } {
  const child = spawn('/usr/bin/python3', ['-c', ECHO, path.join(ROOT, 'python')], { stdio: ['ignore', 'inherit', 'inherit', 'pipe'] });
  const channel = child.stdio[3] as Socket;
  const reader = new FrameReader();
  const got: Frame[] = [];
  let waiting: (() => void) | undefined;
  channel.on('data', (chunk: Buffer) => {
    got.push(...reader.push(chunk));
    waiting?.();
  });
  const frames = async (n: number): Promise<Frame[]> => {
    while (got.length < n) await new Promise<void>((resolve) => { waiting = resolve; });
    return got.splice(0, n);
  };
  const stop = async (): Promise<void> => {
    channel.end();
    if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
  };
  return { channel, frames, stop };
}

function assertEchoed({ header, payload }: Frame, id: number, tensors: Record<string, Tensor>): void {
  assert.equal(header.id, id);
  const out = decodeOutputs(header.outputs, payload);
  for (const name of Object.keys(tensors).filter((n) => n !== 'text')) assert.deepEqual(out[name], tensors[name], name);
  assert.deepEqual(out.text, { dtype: 'json', data: ['a', 'ünï'] });
}

describe('python link', () => {
  test("tensors round-trip through the worker's reader and writer, as aligned numpy views and back", async () => {
    const echo = startEcho();
    try {
      for (let id = 1; id <= 3; id++) {
        for (const b of encodeFrame({ op: 'predict', id, params: null }, TENSORS)) echo.channel.write(b);
        assertEchoed((await echo.frames(1))[0]!, id, TENSORS);
      }
    } finally {
      await echo.stop();
    }
  });

  test('the worker reads several frames that arrive in one write, and a frame larger than one read', async () => {
    const echo = startEcho();
    // 3 MiB of float64: far more than one read of the link brings.
    const big: Record<string, Tensor> = { ...TENSORS, f64: { dtype: 'float64', shape: [3, 131_072], data: Float64Array.from({ length: 3 * 131_072 }, (_, i) => i / 7) } };
    try {
      echo.channel.write(Buffer.concat([1, 2, 3].flatMap((id) => encodeFrame({ op: 'predict', id, params: null }, TENSORS))));
      const three = await echo.frames(3);
      three.forEach((f, i) => assertEchoed(f, i + 1, TENSORS));
      echo.channel.write(Buffer.concat([...encodeFrame({ op: 'predict', id: 4, params: null }, big), ...encodeFrame({ op: 'predict', id: 5, params: null }, TENSORS)]));
      const [large, small] = await echo.frames(2);
      assertEchoed(large!, 4, big);
      assertEchoed(small!, 5, TENSORS);
    } finally {
      await echo.stop();
    }
  });

  test("the worker's writer finishes a frame that the socket takes a few bytes at a time", async () => {
    // A socket that takes at most k bytes per sendmsg; every k must write the same bytes.
    const script = `
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import ferry_worker as fw
class Socket:
    def __init__(self, k): self.k, self.out = k, bytearray()
    def sendmsg(self, parts):
        data = b"".join(bytes(memoryview(p).cast("B")) for p in parts)[:self.k]
        self.out += data
        return len(data)
def frame(k):
    sock = Socket(k)
    arrays = [np.arange(7, dtype=np.float64), np.arange(3, dtype=np.int32)]
    fw.write_frame(sock, {"id": 1, "x": "abc"}, [memoryview(arrays[0]).cast("B"), memoryview(arrays[1]).cast("B"), memoryview(fw.ZEROS)[:4]])
    return bytes(sock.out)
whole = frame(1 << 30)
assert int.from_bytes(whole[:4], "little") == len(whole) - 4 and len(whole) % 8 == 0
for k in (1, 3, 8, 13, 60):
    assert frame(k) == whole, k
`;
    const child = spawn('/usr/bin/python3', ['-c', script, path.join(ROOT, 'python')], { stdio: ['ignore', 'inherit', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 0, stderr);
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
