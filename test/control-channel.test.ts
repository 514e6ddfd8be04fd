/**
 * The control channel's codec (src/channel/control.ts): frames round-trip whatever the chunking,
 * and no byte sequence makes the decoder throw or buffer more than its limits allow; malformed
 * input is reported once, naming what it was.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CONTROL_PREFIX_BYTES, ControlDecoder, encodeControlFrame } from '../src/channel/index.js';

const LIMITS = { maxHeaderBytes: 4096, maxPayloadBytes: 1024 };

describe('control channel codec', () => {
  test('the worked example: {"type":"listening"} is a 28-byte frame', () => {
    const frame = encodeControlFrame({ type: 'listening' });
    assert.equal(frame.length, 28);
    assert.deepEqual([...frame.subarray(0, CONTROL_PREFIX_BYTES)], [0, 0, 0, 20, 0, 0, 0, 0]);
  });

  test('frames round-trip, split at every byte boundary, payloads included', () => {
    const bytes = Buffer.concat([
      encodeControlFrame({ type: 'stage', id: 1, name: 'ads-17', version: 3 }),
      encodeControlFrame({ type: 'staged', id: 1, modelFile: 'model.onnx' }, Buffer.from([0, 1, 2, 255])),
      encodeControlFrame({ type: 'drain' }),
    ]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const d = new ControlDecoder(LIMITS);
      const a = d.push(bytes.subarray(0, cut));
      const b = d.push(bytes.subarray(cut));
      assert.equal(a.error ?? b.error, undefined);
      const frames = [...a.frames, ...b.frames];
      assert.deepEqual(frames.map((f) => f.header), [{ type: 'stage', id: 1, name: 'ads-17', version: 3 }, { type: 'staged', id: 1, modelFile: 'model.onnx' }, { type: 'drain' }]);
      assert.deepEqual([...(frames[1]?.payload ?? [])], [0, 1, 2, 255]);
      assert.equal(frames[0]?.payload.length, 0);
    }
  });

  test('malformed input is reported, naming what it was, and the stream stays refused', () => {
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from('not json\n'), /frame header of \d+ bytes/],
      [encodeControlFrame({ type: 'x' }, Buffer.alloc(2048)), /payload of 2048 bytes/],
      [Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), /header of 4294967295 bytes/],
      [Buffer.from([0, 0, 0, 0, 0, 0, 0, 0]), /header of 0 bytes/],
      [Buffer.concat([Buffer.from([0, 0, 0, 3, 0, 0, 0, 0]), Buffer.from('{x}')]), /not JSON/],
      [Buffer.concat([Buffer.from([0, 0, 0, 2, 0, 0, 0, 0]), Buffer.from('[]')]), /not a JSON object/],
      [Buffer.concat([Buffer.from([0, 0, 0, 10, 0, 0, 0, 0]), Buffer.from('{"type":1}')]), /string "type"/],
    ];
    for (const [bytes, want] of cases) {
      const d = new ControlDecoder(LIMITS);
      const { frames, error } = d.push(Buffer.concat([encodeControlFrame({ type: 'warm' }), bytes]));
      assert.deepEqual(frames.map((f) => f.header.type), ['warm'], 'frames before the bad one are delivered');
      assert.match(error ?? '', want);
      const again = d.push(encodeControlFrame({ type: 'listening' }));
      assert.deepEqual(again, { frames: [], error });
    }
  });

  test('fuzz: random bytes in random chunks never throw; a decoder either fails or holds less than one allowed frame', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
      const d = new ControlDecoder(LIMITS);
      let failed = false;
      let held = 0;
      for (const chunk of chunks) {
        const { error, frames } = d.push(Buffer.from(chunk));
        held += chunk.length - frames.reduce((n, f) => n + CONTROL_PREFIX_BYTES + Buffer.byteLength(JSON.stringify(f.header)) + f.payload.length, 0);
        if (error !== undefined) failed = true;
      }
      if (!failed) assert.ok(held < CONTROL_PREFIX_BYTES + LIMITS.maxHeaderBytes + LIMITS.maxPayloadBytes);
    }), { numRuns: 5000, seed: 17 });
  });

  test('fuzz: valid frames with flipped bytes never throw', () => {
    const valid = encodeControlFrame({ type: 'stage', id: 7, name: 'm', version: 1 });
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), (flips) => {
      const bytes = Buffer.from(valid);
      for (const [i, v] of flips) bytes[i] = v;
      const { frames, error } = new ControlDecoder(LIMITS).push(bytes);
      assert.ok(error !== undefined || frames.length <= 1);
    }), { numRuns: 5000, seed: 17 });
  });
});
