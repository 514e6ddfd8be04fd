import { FerryError, describeValue } from '../errors.js';

/** Longest file name Linux and macOS file systems accept (NAME_MAX), in bytes. */
const MAX_SEGMENT_BYTES = 255;

/**
 * Checks an artifact key and returns its segments. A key is relative, '/'-separated, with no
 * empty, '.' or '..' segments, no backslashes, no NUL, no drive letters. Callers pass keys that are
 * already percent-decoded once; a segment that still decodes to something else (e.g. "%2e%2e") is
 * refused too, so double-encoded traversal attempts fail here rather than in some later decoder.
 */
export function validateKey(key: string, field = 'path'): string[] {
  const bad = (why: string): FerryError =>
    new FerryError('INVALID_PARAMETER_VALUE', `Invalid artifact ${field} ${describeValue(key)}: ${why}.`);
  if (key.length === 0) throw bad('it is empty');
  // Bytes, not characters: file systems limit names in bytes (255 per segment, 4096 per path).
  if (Buffer.byteLength(key) > 1024) throw bad('it is longer than 1024 bytes');
  if (key.includes('\0')) throw bad('it contains a NUL character');
  if (key.includes('\\')) throw bad('use "/" as the separator, not "\\"');
  if (key.startsWith('/') || /^[A-Za-z]:/.test(key)) throw bad('it must be relative, not absolute');
  const segments = key.split('/');
  for (const s of segments) {
    if (s === '' || s === '.' || s === '..') throw bad('empty, "." and ".." segments are not allowed');
    if (/%[0-9A-Fa-f]{2}/.test(s)) throw bad('it contains percent-encoded characters after decoding');
    if (Buffer.byteLength(s) > MAX_SEGMENT_BYTES) throw bad(`a segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
  }
  return segments;
}

/** `key`, once validated (`validateKey`: a 400 for a key that could escape the store). */
export function validatedKey(key: string): string {
  validateKey(key);
  return key;
}
