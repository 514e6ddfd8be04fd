/**
 * The inspector process (started by `Inspector`, inspector.ts): reads `{ id, items }` frames on
 * stdin, each item an artifact directory (`{ dir }`) or a one-file model whose bytes are the
 * frame's attachment's next `size` bytes (`{ file, size }`, bulk registration), inspects them one
 * at a time and answers, per artifact,
 * `{ id, index, ok: true, inspection }` or `{ id, index, ok: false, code, message }` on stdout; a
 * frame's answers are written together, in one write, when its last artifact is done. It runs
 * under Node's permission model (reads: Ferry's code and the artifact store; no writes, no child
 * processes, no addons, no workers) with a V8 heap limit; the server kills it past its memory or
 * time limit. One frame at a time, so when it dies the server knows which frame killed it (and
 * retries a batch one artifact per frame to find the culprit).
 */
import { toFerryError } from '../errors.js';
import { inspectArtifact, inspectFile } from './inspect.js';
import { encodeFrame, FrameReader, MAX_INSPECTOR_ATTACHMENT_BYTES, type Frame } from './inspector-frames.js';

const reader = new FrameReader(MAX_INSPECTOR_ATTACHMENT_BYTES);
let queue = Promise.resolve();

type Item = { dir: string } | { file: string; size: number };

const isItem = (i: unknown): i is Item => typeof i === 'object' && i !== null
  && (typeof (i as { dir?: unknown }).dir === 'string' || (typeof (i as { file?: unknown }).file === 'string' && Number.isSafeInteger((i as { size?: unknown }).size)));

async function handle({ message, attachment }: Frame): Promise<void> {
  const { id, items } = (typeof message === 'object' && message !== null ? message : {}) as { id?: unknown; items?: unknown };
  if (!Number.isSafeInteger(id) || !Array.isArray(items) || !items.every(isItem)) {
    process.stderr.write('inspector: a request is not { id, items }\n');
    process.exit(2);
  }
  const answers: Buffer[] = [];
  let offset = 0;
  for (const [index, item] of items.entries()) {
    try {
      let inspection;
      if ('dir' in item) {
        inspection = await inspectArtifact(item.dir);
      } else {
        const bytes = attachment.subarray(offset, offset + item.size);
        offset += item.size;
        inspection = await inspectFile(item.file, bytes);
      }
      answers.push(encodeFrame({ id, index, ok: true, inspection }));
    } catch (err) {
      const e = toFerryError(err);
      answers.push(encodeFrame({ id, index, ok: false, code: e.code, message: e.message }));
    }
  }
  process.stdout.write(Buffer.concat(answers));
}

process.stdin.on('data', (chunk: Buffer) => {
  for (const frame of reader.push(chunk)) queue = queue.then(() => handle(frame));
});
// The server closed the pipe (it stopped, or gave up on this process): nothing more to do.
process.stdin.on('end', () => process.exit(0));
