/**
 * Hostile artifacts, built byte by byte: ONNX protobuf bombs and GGUF headers with huge metadata
 * (issue 17). Used by test/hostile-artifacts.test.ts and the artifact fuzzer (artifact-fuzz.ts).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';

/** A protobuf base-128 varint. */
export function varint(v: number): Buffer {
  const out: number[] = [];
  while (v > 127) {
    out.push((v % 128) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** A length-delimited protobuf field. */
export function lenField(field: number, payload: Buffer): Buffer {
  return Buffer.concat([varint(field * 8 + 2), varint(payload.length), payload]);
}

/**
 * An ONNX ModelProto (ir_version 8) whose graph holds `nodes` empty NodeProtos (2 bytes each:
 * field 1, length 0): 6 million of them are the 12 MB file that grew the server by ~1 GB when it
 * decoded it whole.
 */
export function onnxNodeBomb(nodes: number): Buffer {
  const graph = Buffer.alloc(nodes * 2);
  for (let i = 0; i < nodes; i++) graph[2 * i] = 0x0a;
  return Buffer.concat([Buffer.from([0x08, 8]), lenField(7, graph)]);
}

/** GGUF little-endian writer (version 3). */
class Gguf {
  private parts: Buffer[] = [];

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.parts.push(b);
    return this;
  }

  u64(v: number | bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.parts.push(b);
    return this;
  }

  str(s: string | Buffer): this {
    const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
    this.u64(b.length);
    this.parts.push(b);
    return this;
  }

  raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }

  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

const GGUF_STRING = 8;
const GGUF_ARRAY = 9;

/**
 * A GGUF header (no tensors) with the keys the llm flavor needs (`general.architecture`,
 * `tokenizer.ggml.model`), then `extraKeys` string values of `valueBytes` bytes each
 * (32,768 × 1 KiB: the 32 MiB header that took 7 s of server CPU to read one byte per await).
 */
export function ggufWithStrings(extraKeys: number, valueBytes: number): Buffer {
  const w = new Gguf().raw(Buffer.from('GGUF', 'latin1')).u32(3).u64(0).u64(2 + extraKeys);
  w.str('general.architecture').u32(GGUF_STRING).str('llama');
  w.str('tokenizer.ggml.model').u32(GGUF_STRING).str('llama');
  const value = Buffer.alloc(valueBytes, 'a');
  for (let i = 0; i < extraKeys; i++) w.str(`pad.${i}`).u32(GGUF_STRING).str(value);
  return w.bytes();
}

/**
 * A GGUF header (no tensors) with the keys the llm flavor needs and `tokenizer.ggml.tokens`, an
 * array of `items` strings of `itemBytes` bytes each. Short arrays are kept in memory by the
 * reader: 40 × 4 MiB exhausts a 128 MiB inspector. Long ones are counted: 3.7 million 1-byte
 * tokens are a 32 MiB header that cost seconds of server CPU read one awaited value at a time.
 */
export function ggufStringArray(items: number, itemBytes: number): Buffer {
  const w = new Gguf().raw(Buffer.from('GGUF', 'latin1')).u32(3).u64(0).u64(3);
  w.str('general.architecture').u32(GGUF_STRING).str('llama');
  w.str('tokenizer.ggml.model').u32(GGUF_STRING).str('llama');
  w.str('tokenizer.ggml.tokens').u32(GGUF_ARRAY).u32(GGUF_STRING).u64(items);
  const value = Buffer.alloc(itemBytes, 'b');
  for (let i = 0; i < items; i++) w.str(value);
  return w.bytes();
}

/** A Hugging Face model directory (the transformers flavor) whose ONNX graph is `onnx`. */
export async function writeTransformersDir(dir: string, onnx: Buffer): Promise<void> {
  await fsp.mkdir(path.join(dir, 'onnx'), { recursive: true });
  await fsp.writeFile(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['BertForSequenceClassification'], id2label: { 0: 'NEG', 1: 'POS' } }));
  await fsp.writeFile(path.join(dir, 'tokenizer.json'), '{}');
  await fsp.writeFile(path.join(dir, 'tokenizer_config.json'), '{}');
  await fsp.writeFile(path.join(dir, 'onnx', 'model.onnx'), onnx);
}
