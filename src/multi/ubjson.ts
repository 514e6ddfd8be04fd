/**
 * A bounded Universal Binary JSON (UBJSON) decoder, for XGBoost's `.ubj` model files. Values come out
 * as JSON would parse them, except that strongly typed numeric arrays (`[$d#L…`, XGBoost's way of
 * writing `split_conditions` and friends) become typed arrays without a per-element object: a
 * float32 array stays a Float32Array, so weights keep their exact bits.
 *
 * Markers: `Z` null, `N` no-op, `T`/`F` booleans, `i U I l L` int8/uint8/int16/int32/int64, `d D`
 * float32/float64, `C` char, `S` string (length-prefixed), `H` high-precision number (as text),
 * `[`/`]` arrays and `{`/`}` objects, optionally with `$type` and `#count`. All numbers are
 * big-endian. The input is hostile: every length is checked against the bytes left before anything
 * is allocated, nesting is capped, and any violation throws an Error naming the offset.
 */

export type UbjValue = null | boolean | number | string | UbjValue[] | { [key: string]: UbjValue } | Float32Array | Float64Array | Int32Array | Uint8Array | Int8Array | Int16Array;

/** Deepest nesting accepted; XGBoost models nest about 6 deep. */
const MAX_DEPTH = 64;
/** Most elements of a zero-byte type (`$Z#…`) in one container. */
const MAX_EMPTY_ELEMENTS = 1 << 20;

export function decodeUbjson(bytes: Uint8Array): UbjValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const fail = (what: string): never => {
    throw new Error(`invalid UBJSON at byte ${pos}: ${what}`);
  };
  const need = (n: number): void => {
    if (n < 0 || pos + n > bytes.length) fail(`${n} more bytes needed, ${bytes.length - pos} left`);
  };
  const marker = (): number => {
    need(1);
    return bytes[pos++] ?? 0;
  };
  const int = (type: number): number => {
    let v: number;
    switch (type) {
      case 0x69: need(1); v = view.getInt8(pos); pos += 1; break; // i
      case 0x55: need(1); v = view.getUint8(pos); pos += 1; break; // U
      case 0x49: need(2); v = view.getInt16(pos); pos += 2; break; // I
      case 0x6c: need(4); v = view.getInt32(pos); pos += 4; break; // l
      case 0x4c: { // L
        need(8);
        const big = view.getBigInt64(pos);
        pos += 8;
        if (big > BigInt(Number.MAX_SAFE_INTEGER) || big < BigInt(Number.MIN_SAFE_INTEGER)) fail(`int64 ${big} out of the safe range`);
        v = Number(big);
        break;
      }
      default: return fail(`marker ${String.fromCharCode(type)} is not an integer type`);
    }
    return v;
  };
  const length = (): number => {
    const n = int(marker());
    if (n < 0) fail(`negative length ${n}`);
    return n;
  };
  const text = (n: number): string => {
    need(n);
    const s = Buffer.from(bytes.buffer, bytes.byteOffset + pos, n).toString('utf8');
    pos += n;
    return s;
  };
  /** Bytes one element of a typed container takes (the lower bound used to check counts). */
  const elementBytes = (type: number): number => {
    switch (type) {
      case 0x69: case 0x55: case 0x43: return 1;
      case 0x49: return 2;
      case 0x6c: case 0x64: return 4;
      case 0x4c: case 0x44: return 8;
      case 0x5a: case 0x4e: case 0x54: case 0x46: return 0;
      default: return 1; // containers, strings: at least one byte each
    }
  };
  const typedArray = (type: number, count: number): UbjValue | undefined => {
    const width = { 0x64: 4, 0x44: 8, 0x6c: 4, 0x55: 1, 0x69: 1, 0x49: 2 }[type];
    if (width === undefined) return undefined;
    need(count * width);
    const start = pos;
    pos += count * width;
    const read = <T extends { [i: number]: number }>(out: T, get: (o: number) => number): T => {
      for (let i = 0; i < count; i++) out[i] = get(start + i * width);
      return out;
    };
    switch (type) {
      case 0x64: return read(new Float32Array(count), (o) => view.getFloat32(o));
      case 0x44: return read(new Float64Array(count), (o) => view.getFloat64(o));
      case 0x6c: return read(new Int32Array(count), (o) => view.getInt32(o));
      case 0x55: return bytes.slice(start, start + count);
      case 0x69: return read(new Int8Array(count), (o) => view.getInt8(o));
      default: return read(new Int16Array(count), (o) => view.getInt16(o));
    }
  };
  /** `$type` and `#count` after `[` or `{`, when present. */
  const header = (): { type: number | undefined; count: number | undefined } => {
    let type: number | undefined;
    let count: number | undefined;
    if (bytes[pos] === 0x24) { // $
      pos++;
      type = marker();
      if (bytes[pos] !== 0x23) fail('a typed container without a count'); // #
    }
    if (bytes[pos] === 0x23) {
      pos++;
      count = length();
      // Each element takes at least elementBytes(type) bytes: refuse a count the rest of the input
      // cannot hold before looping over it. Elements of no bytes (a run of nulls) are capped.
      const min = type === undefined ? 1 : elementBytes(type);
      if (min > 0 ? count * min > bytes.length - pos : count > MAX_EMPTY_ELEMENTS) fail(`count ${count} exceeds what the ${bytes.length - pos} bytes left can hold`);
    }
    return { type, count };
  };
  const value = (type: number, depth: number): UbjValue => {
    if (depth > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`);
    switch (type) {
      case 0x5a: return null; // Z
      case 0x54: return true; // T
      case 0x46: return false; // F
      case 0x69: case 0x55: case 0x49: case 0x6c: case 0x4c: return int(type);
      case 0x64: { need(4); const v = view.getFloat32(pos); pos += 4; return v; } // d
      case 0x44: { need(8); const v = view.getFloat64(pos); pos += 8; return v; } // D
      case 0x43: return text(1); // C
      case 0x53: return text(length()); // S
      case 0x48: { // H
        const s = text(length());
        const n = Number(s);
        return Number.isFinite(n) ? n : fail(`high-precision number '${s.slice(0, 40)}'`);
      }
      case 0x5b: { // [
        const { type: t, count } = header();
        if (t !== undefined && count !== undefined) {
          const typed = typedArray(t, count);
          if (typed !== undefined) return typed;
        }
        const out: UbjValue[] = [];
        if (count !== undefined) {
          for (let i = 0; i < count; i++) out.push(value(t ?? marker(), depth + 1));
          return out;
        }
        for (;;) {
          const m = marker();
          if (m === 0x5d) return out; // ]
          if (m !== 0x4e) out.push(value(m, depth + 1));
        }
      }
      case 0x7b: { // {
        const { type: t, count } = header();
        const out: { [key: string]: UbjValue } = Object.create(null) as { [key: string]: UbjValue };
        const entry = (): void => {
          const key = text(length());
          out[key] = value(t ?? marker(), depth + 1);
        };
        if (count !== undefined) {
          for (let i = 0; i < count; i++) entry();
          return out;
        }
        for (;;) {
          if (bytes[pos] === 0x7d) { // }
            pos++;
            return out;
          }
          if (bytes[pos] === 0x4e) {
            pos++;
            continue;
          }
          entry();
        }
      }
      default: return fail(`unknown marker 0x${type.toString(16)}`);
    }
  };
  const root = value(marker(), 0);
  if (pos !== bytes.length) fail(`${bytes.length - pos} bytes after the value`);
  return root;
}
