/**
 * `ferry.json`, the optional manifest at the root of a model directory, and the JSON reading that
 * every flavor's inspection shares. Shape (keys beyond `flavor` and `main` belong to the flavor):
 *
 * ```json
 * { "flavor": "transformers", "task": "text-classification" }
 * { "flavor": "js", "main": "model.mjs", "signature": { "inputs": [...], "outputs": [...] } }
 * ```
 *
 * Reading is pure JS and bounded (4 MiB a file); it runs in the inspector process at registration.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../errors.js';

export const MANIFEST_FILE = 'ferry.json';

/** Metadata files are small; a bigger one is refused rather than read into the server's memory. */
const MAX_METADATA_BYTES = 4 * 1024 * 1024;

/** A plain JSON object (not null, not an array). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A path named inside an artifact (by `main`, MLmodel, ...) must stay inside it: relative, no `..`,
 * no NUL. Returns it normalised ("./onnx//model.onnx" → "onnx/model.onnx").
 */
export function insideArtifact(p: string, what: string): string {
  const norm = path.posix.normalize(p);
  if (p === '' || path.posix.isAbsolute(norm) || norm === '..' || norm.startsWith('../') || norm.includes('\0')) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `${what} (${JSON.stringify(p)}) must be a path inside the model directory.`);
  }
  return norm;
}

/** Whether `file` (relative to `dir`) is a regular file. */
export async function isFile(dir: string, file: string): Promise<boolean> {
  return (await fsp.stat(path.join(dir, file)).catch(() => undefined))?.isFile() === true;
}

/**
 * Parses the JSON file `file` inside `dir`; `undefined` when it does not exist. Throws a
 * FerryError naming the file when it is too big or not valid JSON.
 */
export async function readJsonFile(dir: string, file: string): Promise<unknown> {
  const text = await readMetadataText(dir, file);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `'${file}' is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * The text of the metadata file `file` inside `dir` (JSON, MLmodel YAML); `undefined` when it does
 * not exist. Throws a FerryError naming the file when it is not a file or too big.
 */
export async function readMetadataText(dir: string, file: string): Promise<string | undefined> {
  const p = path.join(dir, file);
  const st = await fsp.stat(p).catch(() => undefined);
  if (st === undefined) return undefined;
  if (!st.isFile()) throw new FerryError('INVALID_PARAMETER_VALUE', `'${file}' in the model directory is not a file.`);
  if (st.size > MAX_METADATA_BYTES) throw new FerryError('INVALID_PARAMETER_VALUE', `'${file}' is ${st.size} bytes; at most ${MAX_METADATA_BYTES} are accepted.`);
  return fsp.readFile(p, 'utf8');
}

/** The parsed `ferry.json` of `dir` (an object), or undefined when there is none. */
export async function readManifest(dir: string): Promise<Record<string, unknown> | undefined> {
  const manifest = await readJsonFile(dir, MANIFEST_FILE);
  if (manifest !== undefined && !isJsonObject(manifest)) throw new FerryError('INVALID_PARAMETER_VALUE', `${MANIFEST_FILE} must be a JSON object.`);
  return manifest;
}

/**
 * Throws a 400 for the first key of `manifest` outside `allowed` (besides `flavor` and `main`,
 * which the registry reads), so a typo such as "taks" is reported instead of ignored.
 */
export function checkManifestKeys(manifest: Record<string, unknown>, flavor: string, allowed: readonly string[]): void {
  const known = ['flavor', 'main', ...allowed];
  for (const key of Object.keys(manifest)) {
    if (!known.includes(key)) {
      throw new FerryError('INVALID_PARAMETER_VALUE', `${MANIFEST_FILE} has an unknown key '${key}' (allowed for the ${flavor} flavor: ${known.join(', ')}).`);
    }
  }
}
