/**
 * The audit log: every control-plane change, or attempt at one, is a row (who, what, when, from
 * where, result), written before the answer is sent. Reads (GET/HEAD) and inference calls
 * (CAN_QUERY routes) are not changes and are not recorded. Only the path is kept, never the query
 * string, headers or body, so tokens and other secrets cannot reach the log.
 */
import { z } from 'zod';
import { configError } from '../config/index.js';
import { withOutcome, type Middleware } from '../http/index.js';
import type { AuditRecord, MetadataStore } from '../store/index.js';
import { access, isDataPlane, type Access, type ServerRouter } from './access.js';

/** Records audited calls; failures to record are reported through `onError`, never to the caller. */
export function auditTrail(store: MetadataStore, now: () => number, onError: (err: unknown) => void): Middleware<Access> {
  return (next, rule, route) => {
    if (route.method === 'GET' || route.method === 'HEAD' || rule?.kind === 'public' || isDataPlane(rule)) return next;
    const action = `${route.method} ${route.pattern}`;
    return async (ctx) => {
      // Read now: the socket is gone from the request once a refused upload closes it.
      const sourceAddress = ctx.req.socket.remoteAddress ?? '';
      return withOutcome(next, ctx, (status, errorCode) => store.appendAudit({
        timeMs: now(), principal: ctx.principal ?? '', sourceAddress,
        method: ctx.method, path: ctx.path, action, status, errorCode: errorCode ?? '',
      }).catch(onError));
    };
  };
}

const auditQuery = z.strictObject({
  max_results: z.string().regex(/^\d+$/, 'expected a whole number').transform(Number).pipe(z.number().int().min(1).max(1000)).optional(),
  page_token: z.string().optional(),
  principal: z.string().optional(),
  since_ms: z.string().regex(/^\d+$/, 'expected milliseconds since the epoch').transform(Number).optional(),
});

/** `GET /api/2.0/audit-log`: newest first, admins only. */
export function auditRoutes(router: ServerRouter, store: MetadataStore): void {
  router.add('GET', '/api/2.0/audit-log', async (ctx) => {
    const raw = Object.fromEntries(ctx.query);
    const q = auditQuery.safeParse(raw);
    if (!q.success) throw configError(q.error, raw);
    const page = await store.searchAudit({
      maxResults: q.data.max_results ?? 100, pageToken: q.data.page_token,
      ...(q.data.principal === undefined ? {} : { principal: q.data.principal }),
      ...(q.data.since_ms === undefined ? {} : { sinceMs: q.data.since_ms }),
    });
    return { body: { entries: page.items.map(auditJson), ...(page.nextPageToken === undefined ? {} : { next_page_token: page.nextPageToken }) } };
  }, access.admin);
}

function auditJson(e: AuditRecord): Record<string, unknown> {
  return {
    id: e.id, timestamp: e.timeMs, principal: e.principal, source_address: e.sourceAddress,
    method: e.method, path: e.path, action: e.action, status: e.status, ...(e.errorCode === '' ? {} : { error_code: e.errorCode }),
  };
}
