/**
 * The model files `FerryClient.importModels` (`ferry models import`) reads: every `<name>.onnx`,
 * `<name>.ubj` or `<name>.xgb` file of a directory or a tar archive, named by its base name.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../errors.js';
import { isTarArchive, tarFiles } from './tar.js';

/** The model files `importModels` takes, by extension (an XGBoost `.json` is left out: any JSON file could be named so). */
const IMPORT_EXTENSIONS = ['.onnx', '.ubj', '.xgb'];

/**
 * Largest model file `importModels` reads: far above what one bulk-create call carries under the
 * server's default 16 MiB body limit; register bigger models one by one (`ferry models register`).
 */
export const MAX_IMPORT_FILE_BYTES = 64 * 1024 * 1024;

/**
 * A directory's files read ahead of the one being sent: each read is four system calls on libuv's
 * thread pool (open, stat, read, close), and one at a time they left the client waiting on them
 * (measured: 2–3 s per 8,380 tiny files, longer than the server took to register them).
 */
const READ_AHEAD_FILES = 32;
/** Bytes read ahead at most (besides the reads in progress). */
const READ_AHEAD_BYTES = 32 * 1024 * 1024;

export interface ModelFile {
  /** The model's name: the file's base name without the extension ("ads-17"). */
  name: string;
  /** The file name it is registered as: "model" and the extension ("model.ubj"). */
  file: string;
  content: Buffer;
}

/** `ads-17.ubj` → name "ads-17", registered file "model.ubj"; undefined for other files. */
function importedAs(fileName: string): { name: string; file: string } | undefined {
  const ext = IMPORT_EXTENSIONS.find((e) => fileName.endsWith(e) && fileName.length > e.length);
  return ext === undefined ? undefined : { name: fileName.slice(0, -ext.length), file: `model${ext}` };
}

/** The model files of a directory (in name order) or a tar archive (in archive order). */
export async function* modelFiles(source: string): AsyncGenerator<ModelFile> {
  if (isTarArchive(source)) {
    const want = (p: string): boolean => importedAs(path.posix.basename(p)) !== undefined;
    for await (const f of tarFiles(source, { want, maxFileBytes: MAX_IMPORT_FILE_BYTES })) {
      const as = importedAs(path.posix.basename(f.path));
      if (as !== undefined) yield { ...as, content: f.content };
    }
    return;
  }
  const wanted = (await fsp.readdir(source)).sort().flatMap((f) => {
    const as = importedAs(f);
    return as === undefined ? [] : [{ ...as, path: path.join(source, f) }];
  });
  // Reads in file order, up to READ_AHEAD_FILES at once and READ_AHEAD_BYTES of finished ones.
  const reads: Array<Promise<Buffer>> = [];
  let started = 0;
  let readBytes = 0;
  const readAhead = (): void => {
    while (started < wanted.length && reads.length < READ_AHEAD_FILES && readBytes < READ_AHEAD_BYTES) {
      const read = readModelFile((wanted[started++] as { path: string }).path).then((content) => {
        readBytes += content.length;
        return content;
      });
      read.catch(() => undefined); // awaited in order below
      reads.push(read);
    }
  };
  for (const { name, file } of wanted) {
    readAhead();
    const content = await (reads.shift() as Promise<Buffer>);
    readBytes -= content.length;
    yield { name, file, content };
  }
}

/** A file's bytes; a file over MAX_IMPORT_FILE_BYTES is refused before it is read. */
async function readModelFile(file: string): Promise<Buffer> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size > MAX_IMPORT_FILE_BYTES) throw new FerryError('PAYLOAD_TOO_LARGE', `${file} is ${size} bytes, over the ${MAX_IMPORT_FILE_BYTES} bytes a model file of an import may have; register it with 'ferry models register'.`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}
