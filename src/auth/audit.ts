/**
 * The audit log: every control-plane change, or attempt at one, is a row (who, what, when, from
 * where, result). Reads (GET/HEAD) and inference calls (CAN_QUERY routes) are not changes and are
 * not recorded. Only the path is kept, never the query string, headers or body, so tokens and
 * other secrets cannot reach the log.
 *
 * A call that reaches its handler has its row written first, with status 0, and its outcome set
 * after: when that first write fails the change is not made (503), so no change goes unrecorded.
 * A call refused before (401, 403) gets its row once refused. Calls without a valid token are
 * bounded: their path is cut to `ANONYMOUS_PATH_CHARS`, and past `anonymousRowsPerMinute` rows
 * in a minute the rest of that minute's are summed up in one row with their count. Rows older
 * than the retention are deleted at start and hourly.
 */
import { z } from 'zod';
import type { AuditEntry, AuditLogResponse } from '../api/index.js';
import { configError } from '../config/index.js';
import { FerryError } from '../errors.js';
import { withOutcome, type Context, type Middleware } from '../http/index.js';
import type { AuditRecord, MetadataStore } from '../store/index.js';
import { access, isDataPlane, type Access, type ServerRouter } from './access.js';

/** Characters of an unauthenticated call's path that are kept (its route is kept whole). */
export const ANONYMOUS_PATH_CHARS = 64;
const MINUTE_MS = 60_000;
const RETENTION_INTERVAL_MS = 3_600_000;

export interface AuditOptions {
  store: MetadataStore;
  now: () => number;
  /** Rows older than this are deleted. */
  retentionMs: number;
  /** Rows for unauthenticated calls per minute; more are summed up in one row. */
  anonymousRowsPerMinute: number;
  /** Failures to record, and to enforce retention (the caller gets a 503 only when a change is refused). */
  onError: (err: unknown) => void;
}

export class AuditTrail {
  /** Ids of the rows written ahead of the calls now running. */
  private readonly ahead = new WeakMap<Context, number>();
  /** The minute (ms / 60,000) whose anonymous rows are being counted. */
  private minute = 0;
  private anonymousRows = 0;
  /** Anonymous calls over the cap in `minute`, not yet written. */
  private overflow = 0;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(private readonly opts: AuditOptions) {}

  /** Enforces retention now and hourly, and writes each minute's overflow row once the minute is over. */
  async start(): Promise<void> {
    await this.prune();
    this.timers.push(
      setInterval(() => void this.prune(), RETENTION_INTERVAL_MS).unref(),
      setInterval(() => void this.rollMinute(this.opts.now()), MINUTE_MS).unref(),
    );
  }

  /** Stops the timers and writes the overflow row still pending. */
  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.writeOverflow();
  }

  /**
   * The outer step (before authentication): records each audited call's outcome, by finishing
   * the row written ahead of its handler or, for a refused call, appending one.
   */
  readonly record: Middleware<Access> = (next, rule, route) => {
    if (!audited(route.method, rule)) return next;
    const action = `${route.method} ${route.pattern}`;
    return async (ctx) => {
      // Read now: the socket is gone from the request once a refused upload closes it.
      const sourceAddress = ctx.req.socket.remoteAddress ?? '';
      return withOutcome(next, ctx, async (status, errorCode) => {
        const id = this.ahead.get(ctx);
        if (id !== undefined) return this.opts.store.finishAudit(id, status, errorCode ?? '').catch(this.opts.onError);
        const anonymous = ctx.principal === undefined;
        if (anonymous && !this.admitAnonymous()) return;
        await this.opts.store.appendAudit({
          timeMs: this.opts.now(), principal: ctx.principal ?? '', sourceAddress, method: ctx.method,
          path: anonymous && ctx.path.length > ANONYMOUS_PATH_CHARS ? `${ctx.path.slice(0, ANONYMOUS_PATH_CHARS)}...` : ctx.path,
          action, status, errorCode: errorCode ?? '', count: 1,
        }).then(() => undefined, this.opts.onError);
      });
    };
  };

  /**
   * The inner step (right before the handler, after every check): writes the call's row before
   * the change runs; a failed write refuses the change with 503.
   */
  readonly writeAhead: Middleware<Access> = (next, rule, route) => {
    if (!audited(route.method, rule)) return next;
    const action = `${route.method} ${route.pattern}`;
    return async (ctx) => {
      let id: number;
      try {
        id = await this.opts.store.appendAudit({
          timeMs: this.opts.now(), principal: ctx.principal ?? '', sourceAddress: ctx.req.socket.remoteAddress ?? '',
          method: ctx.method, path: ctx.path, action, status: 0, errorCode: '', count: 1,
        });
      } catch (err) {
        this.opts.onError(err);
        throw new FerryError('TEMPORARILY_UNAVAILABLE', `The change was not made: its audit log entry could not be written (${err instanceof Error ? err.message : String(err)}).`, { retryAfterS: 5, cause: err });
      }
      this.ahead.set(ctx, id);
      return next(ctx);
    };
  };

  /** Whether an unauthenticated call gets a row of its own; counts it in the overflow otherwise. */
  private admitAnonymous(): boolean {
    this.rollMinute(this.opts.now());
    if (this.anonymousRows < this.opts.anonymousRowsPerMinute) {
      this.anonymousRows++;
      return true;
    }
    this.overflow++;
    return false;
  }

  private rollMinute(nowMs: number): void {
    const minute = Math.floor(nowMs / MINUTE_MS);
    if (minute === this.minute) return;
    void this.writeOverflow();
    this.minute = minute;
    this.anonymousRows = 0;
  }

  /** One row for the unauthenticated calls over the cap in the minute that ended (all were 401s: nothing else reaches this step without a token). */
  private async writeOverflow(): Promise<void> {
    if (this.overflow === 0) return;
    const count = this.overflow;
    this.overflow = 0;
    await this.opts.store.appendAudit({
      timeMs: (this.minute + 1) * MINUTE_MS - 1, principal: '', sourceAddress: '', method: '*', path: '',
      action: `unauthenticated calls over auditAnonymousRowsPerMinute (${this.opts.anonymousRowsPerMinute})`,
      status: 401, errorCode: 'UNAUTHENTICATED', count,
    }).then(() => undefined, this.opts.onError);
  }

  private async prune(): Promise<void> {
    await this.opts.store.deleteAuditBefore(this.opts.now() - this.opts.retentionMs).then(() => undefined, this.opts.onError);
  }
}

/** Changes are audited: not reads, public routes or inference calls. */
function audited(method: string, rule: Access | undefined): boolean {
  return !(method === 'GET' || method === 'HEAD' || rule?.kind === 'public' || isDataPlane(rule));
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
    return { body: { entries: page.items.map(auditJson), ...(page.nextPageToken === undefined ? {} : { next_page_token: page.nextPageToken }) } satisfies AuditLogResponse };
  }, access.admin);
}

function auditJson(e: AuditRecord): AuditEntry {
  return {
    id: e.id, timestamp: e.timeMs, principal: e.principal, source_address: e.sourceAddress,
    method: e.method, path: e.path, action: e.action, status: e.status, ...(e.errorCode === '' ? {} : { error_code: e.errorCode }),
    ...(e.count === 1 ? {} : { count: e.count }),
  };
}
