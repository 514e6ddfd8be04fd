/**
 * The inference-table-store contract: every InferenceTableStore implementation runs this suite
 * (SQLite now; Postgres later with the same file).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { InferenceRow, InferenceRowQuery, InferenceTableStore } from '../../src/store/index.js';
import { rejectsWith } from '../support/index.js';

export interface InferenceTableStoreHarness {
  open(): Promise<InferenceTableStore>;
  cleanup(): Promise<void>;
}

/** A row of endpoint 'ep' (id 'id-1') at `timestampMs`, with `patch` applied. */
export function row(timestampMs: number, patch: Partial<InferenceRow> = {}): InferenceRow {
  return {
    requestId: `r-${timestampMs}-${Math.random().toString(36).slice(2)}`, clientRequestId: undefined, endpoint: 'ep', endpointId: 'id-1',
    timestampMs, statusCode: 200, errorCode: undefined, executionTimeMs: 1.5, servedEntity: 'm-1', modelName: 'm', modelVersion: '1',
    principal: 'alice', request: '{"inputs": [[1, 2, 3, 4]]}', response: '{"predictions": [[5.625]]}', samplingFraction: 1, ...patch,
  };
}

/** Every row a query matches, following page tokens. */
export async function allPages(s: InferenceTableStore, q: InferenceRowQuery): Promise<InferenceRow[]> {
  const out: InferenceRow[] = [];
  let token: string | undefined;
  do {
    const page = await s.query({ ...q, ...(token === undefined ? {} : { pageToken: token }) });
    assert.ok(page.items.length <= q.maxResults);
    out.push(...page.items);
    token = page.nextPageToken;
  } while (token !== undefined);
  return out;
}

export function inferenceTableStoreContract(name: string, makeHarness: () => Promise<InferenceTableStoreHarness>): void {
  describe(`InferenceTableStore contract: ${name}`, () => {
    const withStore = (title: string, fn: (s: InferenceTableStore) => Promise<void>): void => {
      test(title, async () => {
        const h = await makeHarness();
        const s = await h.open();
        try {
          await fn(s);
        } finally {
          await s.close();
          await h.cleanup();
        }
      });
    };
    const ep = { endpoint: 'ep', endpointId: 'id-1' };

    withStore('rows round-trip, absent values included, newest first', async (s) => {
      const a = row(1000, { clientRequestId: 'c-1', errorCode: 'MODEL_ERROR', statusCode: 500 });
      const b = row(2000, { request: undefined, response: undefined, samplingFraction: 0.25 });
      await s.append([a, b]);
      assert.deepEqual((await s.query({ ...ep, maxResults: 10 })).items, [b, a]);
      assert.equal((await s.query({ ...ep, maxResults: 10 })).nextPageToken, undefined);
    });

    withStore('rows of another endpoint, or of an earlier endpoint of the same name, are not shown', async (s) => {
      await s.append([row(1000), row(1001, { endpoint: 'other' }), row(1002, { endpointId: 'id-0' })]);
      assert.deepEqual((await s.query({ ...ep, maxResults: 10 })).items.map((r) => r.timestampMs), [1000]);
      assert.deepEqual((await s.query({ endpoint: 'ep', endpointId: 'id-0', maxResults: 10 })).items.map((r) => r.timestampMs), [1002]);
    });

    withStore('filters: start inclusive, end exclusive, status, served entity', async (s) => {
      await s.append([row(1000), row(2000, { statusCode: 500 }), row(3000, { servedEntity: 'm-2' }), row(4000, { statusCode: 500, servedEntity: 'm-2' })]);
      const times = async (q: Partial<InferenceRowQuery>): Promise<number[]> => (await allPages(s, { ...ep, maxResults: 10, ...q })).map((r) => r.timestampMs);
      assert.deepEqual(await times({ startMs: 2000, endMs: 4000 }), [3000, 2000]);
      assert.deepEqual(await times({ statusCode: 500 }), [4000, 2000]);
      assert.deepEqual(await times({ servedEntity: 'm-2' }), [4000, 3000]);
      assert.deepEqual(await times({ servedEntity: 'm-2', statusCode: 500, startMs: 4000 }), [4000]);
      assert.deepEqual(await times({ startMs: 5000 }), []);
    });

    withStore('pages walk every row once, in order, also across equal timestamps and rows added meanwhile', async (s) => {
      // 25 rows over 5 distinct timestamps: page boundaries fall inside groups of equal times.
      const rows = Array.from({ length: 25 }, (_, i) => row(1000 + Math.floor(i / 5), { requestId: `r${i}` }));
      await s.append(rows);
      const first = await s.query({ ...ep, maxResults: 4 });
      await s.append([row(5000, { requestId: 'newer' })]); // arrives after the first page: not in this walk
      const rest = await allPages(s, { ...ep, maxResults: 4, ...(first.nextPageToken === undefined ? {} : { pageToken: first.nextPageToken }) });
      assert.deepEqual([...first.items, ...rest].map((r) => r.requestId), rows.map((r) => r.requestId).reverse());
    });

    withStore('a bad page token is a 400 naming page_token', async (s) => {
      await rejectsWith(s.query({ ...ep, maxResults: 1, pageToken: 'not-a-token' }), 'INVALID_PARAMETER_VALUE', /'page_token'/);
    });

    withStore('deleteBefore removes exactly the rows before the cut', async (s) => {
      await s.append([row(1000), row(1999), row(2000), row(3000, { endpoint: 'other' })]);
      assert.equal(await s.deleteBefore(2000), 2);
      assert.deepEqual((await s.query({ ...ep, maxResults: 10 })).items.map((r) => r.timestampMs), [2000]);
      assert.equal(await s.deleteBefore(2000), 0);
    });
  });
}
