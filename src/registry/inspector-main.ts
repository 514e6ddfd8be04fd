/**
 * The inspector process (started by `Inspector`, inspector.ts): reads `{ id, dir }` frames on
 * stdin, inspects one artifact directory at a time and answers `{ id, ok: true, inspection }` or
 * `{ id, ok: false, code, message }` on stdout. It runs under Node's permission model (reads:
 * Ferry's code and the artifact store; no writes, no child processes, no addons, no workers) with
 * a V8 heap limit; the server kills it past its memory or time limit. One request at a time, so
 * when it dies the server knows which artifact killed it.
 */
import { toFerryError } from '../errors.js';
import { inspectArtifact } from './inspect.js';
import { encodeFrame, FrameReader } from './inspector-frames.js';

const reader = new FrameReader();
let queue = Promise.resolve();

function answer(message: unknown): void {
  process.stdout.write(encodeFrame(message));
}

async function handle(request: unknown): Promise<void> {
  const { id, dir } = (typeof request === 'object' && request !== null ? request : {}) as { id?: unknown; dir?: unknown };
  if (!Number.isSafeInteger(id) || typeof dir !== 'string') {
    process.stderr.write('inspector: a request is not { id, dir }\n');
    process.exit(2);
  }
  try {
    answer({ id, ok: true, inspection: await inspectArtifact(dir) });
  } catch (err) {
    const e = toFerryError(err);
    answer({ id, ok: false, code: e.code, message: e.message });
  }
}

process.stdin.on('data', (chunk: Buffer) => {
  for (const request of reader.push(chunk)) queue = queue.then(() => handle(request));
});
// The server closed the pipe (it stopped, or gave up on this process): nothing more to do.
process.stdin.on('end', () => process.exit(0));
