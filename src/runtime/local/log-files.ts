/**
 * Replica log files of the local runtime: reading a log's tail and last lines, the runtime's own
 * notes appended in the replica's JSON-lines format, and why a replica failed to start.
 */
import fsp from 'node:fs/promises';
import { hitProcessLimit, MIB, type LocalReplica } from './types.js';

const LAST_LOG_LINES = 20;
/** Bytes read from the end of a log to find its last lines. */
const LOG_TAIL_BYTES = 64 * 1024;

/** Why a replica exited before it was ready: its own "replica failed to start" error, else its last log lines. */
export async function startFailure(r: LocalReplica): Promise<string> {
  if (r.oomRssBytes !== undefined) {
    return `resident memory ${Math.round(r.oomRssBytes / MIB)} MiB exceeded its limit of ${Math.round(r.handle.spec.memoryLimitBytes / MIB)} MiB while loading; it was killed.`;
  }
  if (hitProcessLimit(r)) {
    return 'its sandbox reached its process limit while loading; it was killed.';
  }
  const lines = (await readTail(r.logFile, LOG_TAIL_BYTES)).toString('utf8').split('\n');
  for (const line of lines.reverse()) {
    try {
      const entry = JSON.parse(line) as { msg?: unknown; error?: unknown };
      if (entry.msg === 'replica failed to start' && typeof entry.error === 'string') return entry.error;
    } catch {
      // Not a JSON log line (e.g. a stack trace on stderr).
    }
  }
  const { exitCode, signalCode } = r.child;
  return `it exited (${exitCode !== null ? `code ${exitCode}` : `signal ${signalCode ?? '?'}`}) before it was ready. Last log lines:\n${await lastLines(r.logFile)}`;
}

export async function readTail(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await fsp.open(file, 'r').catch(() => undefined);
  if (handle === undefined) return Buffer.alloc(0);
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, Math.max(0, maxBytes));
    const buf = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buf, 0, length, size - length);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

export async function lastLines(file: string): Promise<string> {
  const lines = (await readTail(file, LOG_TAIL_BYTES)).toString('utf8').split('\n').filter((l) => l !== '');
  return lines.slice(-LAST_LOG_LINES).join('\n');
}

/** The runtime's own notes in a replica's log, in the replica's JSON-lines format. */
export async function appendLog(file: string, msg: string, fields: Record<string, unknown>, level: 'warn' | 'error' = 'error'): Promise<void> {
  const line = JSON.stringify({ ts: new Date().toISOString(), level, msg, source: 'runtime', ...fields });
  await fsp.appendFile(file, line + '\n').catch(() => undefined);
}
