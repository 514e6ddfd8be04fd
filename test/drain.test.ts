/** Retiring backends (src/gateway/drain.ts): channels close once requests finish, or at the drain deadline. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ReplicaChannel } from '../src/channel/index.js';
import { drainAndClose, type Backend } from '../src/gateway/index.js';

function backend(outstanding: number, log: string[]): Backend {
  const b: Backend = { id: `b${outstanding}`, outstanding, channel: { close: () => log.push(`closed with ${b.outstanding} outstanding`) } as unknown as ReplicaChannel };
  return b;
}

test('the channels close only once every backend has finished its requests', async () => {
  const log: string[] = [];
  const busy = backend(2, log);
  const done = drainAndClose([busy, backend(0, log)], 60_000);
  setTimeout(() => { busy.outstanding = 1; log.push('one answered'); }, 5);
  setTimeout(() => { busy.outstanding = 0; log.push('all answered'); }, 25);
  await done;
  assert.deepEqual(log, ['one answered', 'all answered', 'closed with 0 outstanding', 'closed with 0 outstanding']);
});

test('a backend still busy at the deadline is closed anyway', async () => {
  const log: string[] = [];
  let clockMs = 0;
  const done = drainAndClose([backend(3, log)], 1000, () => clockMs);
  setTimeout(() => { clockMs = 1000; }, 20);
  await done;
  assert.deepEqual(log, ['closed with 3 outstanding']);
});
