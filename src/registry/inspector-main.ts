/**
 * The inspector process (started by `Inspector`, inspector.ts): reads `{ id, dirs }` frames on
 * stdin, inspects their artifact directories one at a time and answers, per artifact,
 * `{ id, index, ok: true, inspection }` or `{ id, index, ok: false, code, message }` on stdout; a
 * frame's answers are written together, in one write, when its last artifact is done. It runs
 * under Node's permission model (reads: Ferry's code and the artifact store; no writes, no child
 * processes, no addons, no workers) with a V8 heap limit; the server kills it past its memory or
 * time limit. One frame at a time, so when it dies the server knows which frame killed it (and
 * retries a batch one artifact per frame to find the culprit).
 */
import { toFerryError } from '../errors.js';
import { inspectArtifact } from './inspect.js';
import { encodeFrame, FrameReader } from './inspector-frames.js';

const reader = new FrameReader();
let queue = Promise.resolve();

async function handle(request: unknown): Promise<void> {
  const { id, dirs } = (typeof request === 'object' && request !== null ? request : {}) as { id?: unknown; dirs?: unknown };
  if (!Number.isSafeInteger(id) || !Array.isArray(dirs) || !dirs.every((d) => typeof d === 'string')) {
    process.stderr.write('inspector: a request is not { id, dirs }\n');
    process.exit(2);
  }
  const answers: Buffer[] = [];
  for (const [index, dir] of dirs.entries()) {
    try {
      answers.push(encodeFrame({ id, index, ok: true, inspection: await inspectArtifact(dir) }));
    } catch (err) {
      const e = toFerryError(err);
      answers.push(encodeFrame({ id, index, ok: false, code: e.code, message: e.message }));
    }
  }
  process.stdout.write(Buffer.concat(answers));
}

process.stdin.on('data', (chunk: Buffer) => {
  for (const request of reader.push(chunk)) queue = queue.then(() => handle(request));
});
// The server closed the pipe (it stopped, or gave up on this process): nothing more to do.
process.stdin.on('end', () => process.exit(0));
