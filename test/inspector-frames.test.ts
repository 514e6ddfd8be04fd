/**
 * The inspector's frames (src/registry/inspector-frames.ts): a message and its attachment survive
 * any split of the byte stream, and each bound is enforced from the header, before the frame's
 * bytes are buffered.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeFrame, FrameReader, MAX_INSPECTOR_FRAME_BYTES } from '../src/registry/inspector-frames.js';

test('frames with and without attachments come back whole, however the stream is split', () => {
  const model = Buffer.from(Array.from({ length: 300 }, (_v, i) => i % 251));
  const stream = Buffer.concat([
    encodeFrame({ id: 1, items: [{ file: 'a.onnx', size: 100 }, { file: 'b.ubj', size: 200 }] }, [model.subarray(0, 100), model.subarray(100)]),
    encodeFrame({ id: 2, index: 0, ok: true }),
    encodeFrame({ id: 3, items: [] }, [Buffer.alloc(0)]),
  ]);
  for (const size of [1, 3, 7, 64, stream.length]) {
    const reader = new FrameReader(1024);
    const frames = [];
    for (let at = 0; at < stream.length; at += size) frames.push(...reader.push(stream.subarray(at, at + size)));
    assert.deepEqual(frames.map((f) => f.message), [
      { id: 1, items: [{ file: 'a.onnx', size: 100 }, { file: 'b.ubj', size: 200 }] }, { id: 2, index: 0, ok: true }, { id: 3, items: [] }], `chunks of ${size}`);
    assert.deepEqual(frames.map((f) => f.attachment.length), [300, 0, 0]);
    assert.deepEqual(frames[0]?.attachment, model);
  }
});

test('an attachment over the reader\'s bound, or any attachment where none is allowed, and an oversized message are refused from the header', () => {
  const withAttachment = encodeFrame({ id: 1 }, [Buffer.alloc(10)]);
  assert.throws(() => new FrameReader(9).push(withAttachment.subarray(0, 8)), /attachment of 10 bytes is over the 9-byte limit/);
  assert.throws(() => new FrameReader(0).push(withAttachment), /over the 0-byte limit/);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(MAX_INSPECTOR_FRAME_BYTES + 1, 0);
  assert.throws(() => new FrameReader(0).push(head), /is over the \d+-byte limit/);
});
