/**
 * Gateway load shared between servers (Kubernetes, several servers on one store). Every server's
 * gateway serves inference, but only the leader runs the autoscaler. So each follower writes,
 * about once a second, one row with its load per served entity (time-weighted in-flight
 * concurrency since its previous report, and the requests waiting in its buffer: see
 * `RouteFollower`), and the leader adds the other servers' fresh reports to its own samples
 * (`PeerLoad`). The autoscaler policy does not change: its input, the sampled concurrency, is
 * the whole fleet's.
 *
 * Freshness is judged by comparing a report's time (the follower's clock) with the leader's
 * clock, so the servers' clocks must agree to well within `PEER_LOAD_MAX_AGE_MS` (NTP on
 * Kubernetes nodes keeps them within milliseconds).
 */
import type { GatewayLoadReport, MetadataStore } from '../store/index.js';

/**
 * A report older than this is ignored: followers report every second, so a follower that died
 * (or lost the store) stops counting after 3 s instead of holding replicas up.
 */
export const PEER_LOAD_MAX_AGE_MS = 3000;

/** How often a follower reports its load. */
export const LOAD_REPORT_INTERVAL_MS = 1000;

/** Reports this old are deleted by the leader: their servers are gone (a new pod has a new name). */
const GONE_AFTER_MS = 10 * 60_000;

/** The key of a served entity in `peerDemand`'s map. */
export function loadKey(endpoint: string, servedEntity: string): string {
  return `${endpoint}/${servedEntity}`;
}

/**
 * The other servers' demand per served entity (key `loadKey`) at `nowMs`: over the reports not
 * older than `maxAgeMs` and not `self`'s, the sum of max(concurrency, queued). Queued requests
 * are demand even when the time average is small: a request that just began waiting for an
 * entity at zero replicas makes the sum > 0, which the policy takes as a poke.
 *
 * Example: at t = 10 000, server b reported {lin/a: concurrency 2.5, queued 0} at 9 200 and
 * server c {lin/a: concurrency 0.1, queued 3} at 9 900 → lin/a: 2.5 + 3 = 5.5; a report of
 * server d taken at 6 500 (3.5 s old) is ignored.
 */
export function peerDemand(reports: readonly GatewayLoadReport[], self: string, nowMs: number, maxAgeMs = PEER_LOAD_MAX_AGE_MS): Map<string, number> {
  const demand = new Map<string, number>();
  for (const r of reports) {
    if (r.server === self || nowMs - r.reportedMs > maxAgeMs) continue;
    for (const e of r.entities) {
      const key = loadKey(e.endpoint, e.servedEntity);
      demand.set(key, (demand.get(key) ?? 0) + Math.max(count(e.concurrency), count(e.queued)));
    }
  }
  return demand;
}

/** A reported number as a load: another server's row is input, and the policy takes only finite numbers ≥ 0. */
function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

export interface PeerLoadOptions {
  store: Pick<MetadataStore, 'listGatewayLoad' | 'deleteGatewayLoad'>;
  /** This server's name in the reports (its own row, written while it followed, is not counted). */
  self: string;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * The leader's view of the other servers' reports: read again at each autoscale tick (one read
 * at a time), used by the next. Also deletes the rows of servers gone for long.
 */
export class PeerLoad {
  private reports: readonly GatewayLoadReport[] = [];
  private reading = false;
  private prunedMs = -Infinity;

  constructor(private readonly options: PeerLoadOptions) {}

  /** Reads the reports again; resolves once read (at once when a read is still running). Never rejects. */
  async refresh(nowMs: number): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      this.reports = await this.options.store.listGatewayLoad();
      if (nowMs - this.prunedMs >= GONE_AFTER_MS / 10) {
        this.prunedMs = nowMs;
        await this.options.store.deleteGatewayLoad(nowMs - GONE_AFTER_MS);
      }
    } catch (err) {
      // The last reports age out (PEER_LOAD_MAX_AGE_MS): the leader falls back to its own load.
      this.options.log('warn', 'reading the other servers\' gateway load failed', { error: String(err) });
    } finally {
      this.reading = false;
    }
  }

  /** The other servers' demand per served entity at `nowMs`, from the last read (see `peerDemand`). */
  demand(nowMs: number): Map<string, number> {
    return peerDemand(this.reports, this.options.self, nowMs);
  }
}
