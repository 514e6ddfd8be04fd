/**
 * The bulk registration API's binary body: `Content-Type: application/x-tar`, one regular file per
 * model, at `<name>/<file>` (e.g. `ads-17/model.onnx`), read as a stream instead of base64 JSON (a
 * third fewer bytes, no JSON string of megabytes to parse and collect). Limits, each a 4xx naming
 * the entry or the limit, checked while the body streams so that a hostile body costs at most
 * `maxBodyBytes` of memory:
 * - the body: at most `maxBodyBytes` (413; a declared Content-Length over it is refused unread);
 * - entries: at most MAX_BULK_MODELS files (400), at least one;
 * - an entry: at most `maxFileBytes` (413, refused from its header before its bytes are read);
 * - names: exactly two segments, a model name (MODEL_NAME_PATTERN) then a file name (400);
 * - a malformed or truncated archive: 400 naming the byte offset of the bad header.
 * Directories, links and other entries are ignored; pax and GNU long names are honoured.
 */
import type { IncomingMessage } from 'node:http';
import { validateKey } from '../artifacts/index.js';
import { FerryError, invalidParameter } from '../errors.js';
import { readTar, TarError } from '../tar/index.js';
import { checkName, MAX_BULK_MODELS, type BulkModel } from './registry.js';

/** The Content-Type that selects this body. */
export const BULK_TAR_TYPE = 'application/x-tar';

export interface BulkTarLimits {
  maxBodyBytes: number;
  /** Largest model file (the server's maxUploadBytes). */
  maxFileBytes: number;
}

/** The models of a tar body, in archive order; a FerryError for any limit or malformed input. */
export async function readBulkTar(req: IncomingMessage, limits: BulkTarLimits): Promise<BulkModel[]> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limits.maxBodyBytes) {
    req.resume();
    throw tooLarge(limits.maxBodyBytes);
  }
  const models: BulkModel[] = [];
  try {
    for await (const entry of readTar(bounded(req, limits.maxBodyBytes), 'the tar body', { want: () => true, maxFileBytes: limits.maxFileBytes })) {
      if (models.length === MAX_BULK_MODELS) throw invalidParameter('models', `more than ${MAX_BULK_MODELS} entries`, `at most ${MAX_BULK_MODELS} model files per call`);
      models.push(entryModel(entry.path, entry.content, models.length));
    }
  } catch (err) {
    req.resume(); // the rest of the body is discarded, not buffered
    if (err instanceof TarError) throw new FerryError(err.kind === 'too-large' ? 'PAYLOAD_TOO_LARGE' : 'MALFORMED_REQUEST', `Invalid bulk registration body: ${err.message}`);
    throw err;
  }
  if (models.length === 0) throw invalidParameter('models', 'an archive with no files', 'at least one <name>/<file> entry');
  return models;
}

/** `ads-17/model.onnx` → model "ads-17", file "model.onnx"; anything else is a 400 naming the entry. */
function entryModel(entryPath: string, content: Buffer, index: number): BulkModel {
  const field = `entry ${index} ('${entryPath}')`;
  const parts = entryPath.split('/');
  if (parts.length !== 2) throw invalidParameter(field, entryPath, 'a path <model name>/<file name>, e.g. "ads-17/model.onnx"');
  const [name, file] = parts as [string, string];
  checkName(name, field);
  validateKey(file, field);
  return { name, file, content };
}

/** The request body's chunks, failing with a 413 once more than `maxBytes` arrived. */
async function* bounded(req: IncomingMessage, maxBytes: number): AsyncGenerator<Buffer> {
  let total = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) throw tooLarge(maxBytes);
      yield chunk;
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError('MALFORMED_REQUEST', `Reading the request body failed: ${(err as Error).message}`);
  }
}

function tooLarge(maxBytes: number): FerryError {
  return new FerryError('PAYLOAD_TOO_LARGE', `Request body exceeds the limit of ${maxBytes} bytes.`);
}
