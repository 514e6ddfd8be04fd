/** The frame codec of the gateway ↔ replica channel: splits, concatenation, limits, truncation. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  FrameDecoder, FrameFlag, FrameType, HEADER_BYTES, MethodCode, PREFACE, ProtocolError, encodeRequestFrame, encodeResponseFrame, readRequestMeta,
  readResponseMeta, type RequestMeta,
} from '../src/channel/index.js';

interface Decoded { type: number; id: number; flags: number; code: number; payload: Buffer }

function collector(maxPayloadBytes: number): { decoder: FrameDecoder; frames: Decoded[] } {
  const frames: Decoded[] = [];
  // Copies: a payload may be a view of a chunk the test goes on to reuse.
  const decoder = new FrameDecoder(maxPayloadBytes, (type, id, flags, code, payload) => frames.push({ type, id, flags, code, payload: Buffer.from(payload) }));
  return { decoder, frames };
}

const big = Buffer.alloc(300, 7);
const FRAMES = [
  encodeRequestFrame(1, MethodCode.POST, '/invocations', Buffer.from('{"inputs":[[1,2,3,4]]}')),
  encodeResponseFrame(0xfffffffe, 200, ''),
  encodeRequestFrame(3, MethodCode.GET, '/v2/models/é/ready', undefined),
  encodeResponseFrame(4, 503, big),
];
const STREAM = Buffer.concat(FRAMES);

/** True when `p` lies inside `chunk`'s memory (Buffers under 4 KiB share a pool, so `.buffer` alone says nothing). */
function isViewOf(p: Buffer, chunk: Buffer): boolean {
  return p.buffer === chunk.buffer && p.byteOffset >= chunk.byteOffset && p.byteOffset + p.length <= chunk.byteOffset + chunk.length;
}

function expected(): Decoded[] {
  return [
    { type: FrameType.REQUEST, id: 1, flags: 0, code: MethodCode.POST, payload: FRAMES[0]!.subarray(HEADER_BYTES) },
    { type: FrameType.RESPONSE, id: 0xfffffffe, flags: 0, code: 200, payload: Buffer.alloc(0) },
    { type: FrameType.REQUEST, id: 3, flags: 0, code: MethodCode.GET, payload: FRAMES[2]!.subarray(HEADER_BYTES) },
    { type: FrameType.RESPONSE, id: 4, flags: 0, code: 503, payload: big },
  ];
}

describe('frame codec', () => {
  test('the worked example of the codec docs: POST /invocations {} as id 7 is these 28 bytes', () => {
    const frame = encodeRequestFrame(7, MethodCode.POST, '/invocations', Buffer.from('{}'));
    assert.equal(frame.toString('hex'), '00000010' + '00000007' + '01' + '00' + '0001' + '000c' + Buffer.from('/invocations{}').toString('hex'));
    assert.equal(frame.length, 28);
    assert.deepEqual([...PREFACE], [0x46, 0x45, 0x52, 0x52, 0x59, 0x00, 0x01, 0x00]);
  });

  test('frames concatenated in one chunk decode as views of it, without copies', () => {
    const frames: Buffer[] = [];
    const decoder = new FrameDecoder(1024, (_t, _i, _f, _c, payload) => frames.push(payload));
    decoder.push(STREAM);
    assert.equal(frames.length, 4);
    for (const p of frames) if (p.length > 0) assert.ok(isViewOf(p, STREAM), 'payload is a subarray of the read');
    assert.equal(decoder.midFrame, false);
  });

  test('every single split point, and byte-by-byte reads, give the same frames', () => {
    for (let i = 0; i <= STREAM.length; i++) {
      const { decoder, frames } = collector(1024);
      decoder.push(STREAM.subarray(0, i));
      decoder.push(STREAM.subarray(i));
      assert.deepEqual(frames, expected(), `split at ${i}`);
      assert.equal(decoder.midFrame, false);
    }
    const { decoder, frames } = collector(1024);
    for (let i = 0; i < STREAM.length; i++) decoder.push(STREAM.subarray(i, i + 1));
    assert.deepEqual(frames, expected());
  });

  test('every pair of split points over the first three frames gives the same frames', () => {
    const stream = Buffer.concat(FRAMES.slice(0, 3));
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j++) {
        const { decoder, frames } = collector(1024);
        decoder.push(stream.subarray(0, i));
        decoder.push(stream.subarray(i, j));
        decoder.push(stream.subarray(j));
        assert.deepEqual(frames, expected().slice(0, 3), `splits at ${i}, ${j}`);
      }
    }
  });

  test('a split frame is copied once, into a buffer of its size, not into the next frames', () => {
    const frames: Buffer[] = [];
    const decoder = new FrameDecoder(1024, (_t, _i, _f, _c, payload) => frames.push(payload));
    const third = FRAMES[0]!.length + FRAMES[1]!.length;
    decoder.push(STREAM.subarray(0, third + HEADER_BYTES + 5)); // 5 bytes into the third payload
    decoder.push(STREAM.subarray(third + HEADER_BYTES + 5));
    assert.equal(frames.length, 4);
    assert.equal(frames[2]!.length, FRAMES[2]!.length - HEADER_BYTES);
    assert.ok(!isViewOf(frames[2]!, STREAM), 'the split frame was copied');
    assert.ok(isViewOf(frames[3]!, STREAM), 'the frame after it is still a view');
    // Only the header split: the payload is still a view of the second read.
    frames.length = 0;
    decoder.push(STREAM.subarray(third, third + 5));
    decoder.push(STREAM.subarray(third + 5));
    assert.ok(isViewOf(frames[0]!, STREAM));
  });

  test('zero-length payload and a payload of exactly the limit decode; one byte more is a protocol error', () => {
    const { decoder, frames } = collector(big.length);
    decoder.push(encodeResponseFrame(9, 204, Buffer.alloc(0)));
    decoder.push(encodeResponseFrame(10, 200, big));
    assert.equal(frames[0]!.payload.length, 0);
    assert.deepEqual(frames[1]!.payload, big);
    assert.throws(() => decoder.push(encodeResponseFrame(11, 200, Buffer.alloc(big.length + 1))), ProtocolError);
    // A request frame counts its path as payload: a zero-length body with a path.
    const r = collector(64);
    r.decoder.push(encodeRequestFrame(12, MethodCode.POST, '/x', Buffer.alloc(0)));
    assert.equal(r.frames[0]!.payload.length, 4);
  });

  test('an oversize declared length fails on its header alone, also when the header is split', () => {
    const header = encodeResponseFrame(1, 200, Buffer.alloc(1_000_000)).subarray(0, HEADER_BYTES);
    const a = collector(1000);
    assert.throws(() => a.decoder.push(header), /1000000 bytes exceeds the limit of 1000/);
    const b = collector(1000);
    b.decoder.push(header.subarray(0, 5));
    assert.throws(() => b.decoder.push(header.subarray(5)), ProtocolError);
  });

  test('a truncated frame at the end of the stream is visible as midFrame', () => {
    const { decoder, frames } = collector(1024);
    decoder.push(STREAM.subarray(0, FRAMES[0]!.length + 3)); // 3 bytes into the second header
    assert.equal(frames.length, 1);
    assert.equal(decoder.midFrame, true);
    const d2 = collector(1024);
    d2.decoder.push(FRAMES[3]!.subarray(0, HEADER_BYTES + 10)); // header whole, payload partial
    assert.equal(d2.decoder.midFrame, true);
    d2.decoder.push(FRAMES[3]!.subarray(HEADER_BYTES + 10));
    assert.equal(d2.decoder.midFrame, false);
    assert.equal(d2.frames.length, 1);
  });
});

describe('frame metadata (request id, trace context, replica span)', () => {
  const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const noMeta = (): RequestMeta => ({ requestId: undefined, traceparent: undefined, tracestate: undefined, wantSpan: false });
  /** Decodes one request frame the way the replica does: metadata (when flagged), then path and body. */
  const decodeRequest = (frame: Buffer): { flags: number; meta: RequestMeta | undefined; path: string; body: string } => {
    const { decoder, frames } = collector(1024);
    decoder.push(frame);
    const f = frames[0]!;
    let meta: RequestMeta | undefined;
    let off = 0;
    if ((f.flags & (FrameFlag.META | FrameFlag.SPAN_WANTED)) !== 0) {
      meta = { ...noMeta(), wantSpan: (f.flags & FrameFlag.SPAN_WANTED) !== 0 };
      if ((f.flags & FrameFlag.META) !== 0) off = readRequestMeta(f.payload, meta);
    }
    const pathEnd = off + 2 + f.payload.readUInt16BE(off);
    return { flags: f.flags, meta, path: f.payload.toString('utf8', off + 2, pathEnd), body: f.payload.toString('utf8', pathEnd) };
  };

  test('the worked example of the codec docs: request id "r1" adds flag META and 7 bytes before the path', () => {
    const frame = encodeRequestFrame(7, MethodCode.POST, '/invocations', Buffer.from('{}'), { ...noMeta(), requestId: 'r1' });
    assert.equal(frame.toString('hex'), '00000017' + '00000007' + '01' + '01' + '0001' + '0005' + '01' + '0002' + Buffer.from('r1').toString('hex')
      + '000c' + Buffer.from('/invocations{}').toString('hex'));
    assert.equal(frame.length, 35);
  });

  test('request metadata round-trips: each field alone, all together, and span-wanted without any field', () => {
    const cases: RequestMeta[] = [
      { ...noMeta(), requestId: 'req-1' },
      { ...noMeta(), traceparent: TRACEPARENT },
      { requestId: 'a.b:c_d-e', traceparent: TRACEPARENT, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7', wantSpan: true },
      { ...noMeta(), wantSpan: true },
    ];
    for (const meta of cases) {
      const decoded = decodeRequest(encodeRequestFrame(3, MethodCode.POST, '/v2/models/m/infer', Buffer.from('{"inputs":[]}'), meta));
      assert.deepEqual(decoded.meta, meta);
      assert.equal(decoded.path, '/v2/models/m/infer');
      assert.equal(decoded.body, '{"inputs":[]}');
    }
    // Only span-wanted: the flag bit, no metadata bytes.
    assert.equal(decodeRequest(encodeRequestFrame(3, MethodCode.GET, '/x', undefined, { ...noMeta(), wantSpan: true })).flags, FrameFlag.SPAN_WANTED);
  });

  test('frames without metadata are the frames of before, byte for byte, and decode with no metadata', () => {
    const old = encodeRequestFrame(7, MethodCode.POST, '/invocations', Buffer.from('{}'));
    assert.deepEqual(encodeRequestFrame(7, MethodCode.POST, '/invocations', Buffer.from('{}'), noMeta()), old);
    assert.deepEqual(decodeRequest(old), { flags: 0, meta: undefined, path: '/invocations', body: '{}' });
    assert.deepEqual(encodeResponseFrame(4, 200, '{"ok":1}', undefined), encodeResponseFrame(4, 200, '{"ok":1}'));
  });

  test('a response carries the replica span before its body, flagged META', () => {
    const span = { spanId: '00f067aa0ba902b7', startUnixUs: 1_732_600_000_123_456, durationUs: 1234.5 };
    const { decoder, frames } = collector(1024);
    decoder.push(Buffer.concat([encodeResponseFrame(1, 500, '{"error_code":"MODEL_ERROR"}', span), encodeResponseFrame(2, 200, '{}')]));
    assert.equal(frames[0]!.flags, FrameFlag.META);
    const { span: decoded, bodyStart } = readResponseMeta(frames[0]!.payload);
    assert.deepEqual(decoded, span);
    assert.equal(frames[0]!.payload.toString('utf8', bodyStart), '{"error_code":"MODEL_ERROR"}');
    assert.equal(frames[1]!.flags, 0);
    assert.equal(frames[1]!.payload.toString(), '{}');
  });

  test('unknown metadata keys are skipped; a section or entry running past its end is a protocol error', () => {
    // u16 section length 9: an unknown key 9 with 2 bytes, then a request id "r".
    const section = Buffer.from('0009' + '09' + '0002' + 'ffff' + '01' + '0001' + Buffer.from('r').toString('hex'), 'hex');
    const meta = noMeta();
    assert.equal(readRequestMeta(Buffer.concat([section, Buffer.from('0001', 'hex')]), meta), 11);
    assert.equal(meta.requestId, 'r');
    assert.throws(() => readRequestMeta(Buffer.from('0009' + '01' + '0001' + '72', 'hex'), noMeta()), /past the end of its frame/);
    assert.throws(() => readRequestMeta(Buffer.from('0004' + '01' + '0009' + '72', 'hex'), noMeta()), /past the end of its section/);
    assert.throws(() => readRequestMeta(Buffer.from('00', 'hex'), noMeta()), ProtocolError);
    assert.throws(() => readResponseMeta(Buffer.from('0003' + '01' + '0010', 'hex')), /past the end of its section/);
  });
});
