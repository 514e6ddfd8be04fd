/**
 * The server's metric state, fed by diagnostics_channel events (gateway requests, replica starts
 * and exits), and the Prometheus families built from it at scrape time together with the
 * controller's gauges and the replicas' model-side totals.
 */
import type { EntityGauges, ReplicaExitEvent, ReplicaReadyEvent } from '../control/index.js';
import type { GatewayRequestEvent, GatewayStreamEvent } from '../gateway/index.js';
import type { InferenceTableDropEvent } from '../inference-tables/index.js';
import type { MetricFamily } from './exposition.js';
import {
  BATCH_ROWS_BUCKETS, COLD_START_SECONDS_BUCKETS, Histogram, MODEL_SECONDS_BUCKETS, QUEUE_SECONDS_BUCKETS, REQUEST_SECONDS_BUCKETS,
} from './histogram.js';
import type { EntityModelTotals } from './scrape.js';

/**
 * Why the gateway refused a request, from its error code. Two codes have two sources each, told
 * apart by whether a served entity had been chosen when it failed (the gateway picks the entity
 * after the rate limit and before waiting for a replica):
 * - REQUEST_LIMIT_EXCEEDED: `rate_limited` (the endpoint's rate limits, before any entity) or
 *   `queue_full` (the entity's buffer holds `bufferDepth` requests already);
 * - TEMPORARILY_UNAVAILABLE: `no_replica` (no entity has a ready replica) or `queue_timeout` (no
 *   replica had room within `bufferTimeout`, or the entity was shutting down).
 * Other rejections: `timeout` (DEADLINE_EXCEEDED, the model did not answer in time), `too_large`
 * (PAYLOAD_TOO_LARGE). Other errors (a bad input, a model error) are not rejections: they show in
 * `ferry_requests_total` by code.
 */
export function rejectReason(errorCode: string | undefined, servedEntity: string): string | undefined {
  switch (errorCode) {
    case 'REQUEST_LIMIT_EXCEEDED': return servedEntity === '' ? 'rate_limited' : 'queue_full';
    case 'TEMPORARILY_UNAVAILABLE': return servedEntity === '' ? 'no_replica' : 'queue_timeout';
    case 'DEADLINE_EXCEEDED': return 'timeout';
    case 'PAYLOAD_TOO_LARGE': return 'too_large';
    default: return undefined;
  }
}

export class EntityCounters {
  /** Answers by HTTP status. */
  readonly codes = new Map<number, number>();
  readonly duration = new Histogram(REQUEST_SECONDS_BUCKETS);
  readonly queue = new Histogram(QUEUE_SECONDS_BUCKETS);
  readonly coldStarts = new Histogram(COLD_START_SECONDS_BUCKETS);
  readonly restarts = { crashed: 0, oom: 0, processes: 0, protocol: 0 };
  /** Streamed answers (LLM token streams): time to the first chunk, chunks relayed, streams by outcome. */
  readonly firstChunk = new Histogram(REQUEST_SECONDS_BUCKETS);
  streamedChunks = 0;
  readonly streams = { complete: 0, failed: 0, cancelled: 0 };
  /** For the OIP v2 statistics extension: the model version last served, answers under 400 and the others (count, seconds), the last answer's end (ms since the epoch). */
  modelVersion = '';
  readonly success = { count: 0, seconds: 0 };
  readonly fail = { count: 0, seconds: 0 };
  lastMs = 0;
}

class EndpointCounters {
  readonly entities = new Map<string, EntityCounters>();
  readonly rejected = new Map<string, number>();
  /** Inference table rows dropped, by reason (`queue_full`, `write_failed`). */
  readonly tableDrops = new Map<string, number>();

  entity(name: string): EntityCounters {
    let e = this.entities.get(name);
    if (e === undefined) this.entities.set(name, e = new EntityCounters());
    return e;
  }
}

/** What a scrape may show and what it adds to the event counters. */
export interface ScrapeView {
  /** Endpoints the caller may see. */
  visible: (endpoint: string) => boolean;
  gauges: readonly EntityGauges[];
  model: ReadonlyMap<string, EntityModelTotals>;
  scrapeErrors: ReadonlyMap<string, number>;
}

export class ServingMetrics {
  private readonly endpoints = new Map<string, EndpointCounters>();

  private endpoint(name: string): EndpointCounters {
    let e = this.endpoints.get(name);
    if (e === undefined) this.endpoints.set(name, e = new EndpointCounters());
    return e;
  }

  /** One inference request (the caller keeps metadata calls and unknown endpoints out). */
  onRequest(ev: GatewayRequestEvent): void {
    const ep = this.endpoint(ev.endpoint);
    const c = ep.entity(ev.servedEntity);
    c.codes.set(ev.status, (c.codes.get(ev.status) ?? 0) + 1);
    c.duration.observe(ev.durationMs / 1000);
    const outcome = ev.status < 400 ? c.success : c.fail;
    outcome.count++;
    outcome.seconds += ev.durationMs / 1000;
    if (ev.modelVersion !== '') c.modelVersion = ev.modelVersion;
    c.lastMs = Math.max(c.lastMs, ev.startMs + ev.durationMs);
    // Requests refused before an entity was chosen never waited in a buffer.
    if (ev.servedEntity !== '') c.queue.observe(ev.queueMs / 1000);
    const reason = rejectReason(ev.errorCode, ev.servedEntity);
    if (reason !== undefined) ep.rejected.set(reason, (ep.rejected.get(reason) ?? 0) + 1);
  }

  onInferenceTableDrop(ev: InferenceTableDropEvent): void {
    const ep = this.endpoint(ev.endpoint);
    ep.tableDrops.set(ev.reason, (ep.tableDrops.get(ev.reason) ?? 0) + ev.rows);
  }

  onStream(ev: GatewayStreamEvent): void {
    const c = this.endpoint(ev.endpoint).entity(ev.servedEntity);
    if (ev.firstChunkMs !== undefined) c.firstChunk.observe(ev.firstChunkMs / 1000);
    c.streamedChunks += ev.chunks;
    c.streams[ev.outcome]++;
  }

  onReplicaReady(ev: ReplicaReadyEvent): void {
    this.endpoint(ev.endpoint).entity(ev.servedEntity).coldStarts.observe(ev.durationMs / 1000);
  }

  onReplicaExit(ev: ReplicaExitEvent): void {
    this.endpoint(ev.endpoint).entity(ev.servedEntity).restarts[ev.reason]++;
  }

  /** Per served entity that answered (endpoint, entity, counters), for `endpoints` only. */
  entitiesOf(endpoints: (endpoint: string) => boolean): Array<{ endpoint: string; servedEntity: string; counters: Readonly<EntityCounters> }> {
    return [...this.endpoints].filter(([name]) => endpoints(name)).sort(([a], [b]) => a.localeCompare(b))
      .flatMap(([endpoint, ep]) => [...ep.entities].filter(([name]) => name !== '').sort(([a], [b]) => a.localeCompare(b))
        .map(([servedEntity, counters]) => ({ endpoint, servedEntity, counters })));
  }

  /** Forgets endpoints that no longer exist (a deleted endpoint's series end). */
  prune(exists: (endpoint: string) => boolean): void {
    for (const name of this.endpoints.keys()) if (!exists(name)) this.endpoints.delete(name);
  }

  /** The serving families, only for endpoints in `view.visible`. */
  families(view: ScrapeView): MetricFamily[] {
    const eps = [...this.endpoints].filter(([name]) => view.visible(name)).sort(([a], [b]) => a.localeCompare(b));
    const entities = eps.flatMap(([endpoint, ep]) => [...ep.entities].sort(([a], [b]) => a.localeCompare(b))
      .map(([servedEntity, c]) => ({ labels: { endpoint, served_entity: servedEntity }, c })));
    const gauges = view.gauges.filter((g) => view.visible(g.endpoint))
      .sort((a, b) => a.endpoint.localeCompare(b.endpoint) || a.servedEntity.localeCompare(b.servedEntity));
    const gaugeLabels = (g: EntityGauges): { endpoint: string; served_entity: string } => ({ endpoint: g.endpoint, served_entity: g.servedEntity });
    const model = [...view.model].filter(([key]) => view.visible(key.slice(0, key.indexOf('\0')))).sort(([a], [b]) => a.localeCompare(b))
      .map(([key, t]) => ({ labels: { endpoint: key.slice(0, key.indexOf('\0')), served_entity: key.slice(key.indexOf('\0') + 1) }, t }));
    return [
      {
        name: 'ferry_requests_total', type: 'counter', help: 'Inference requests answered by the gateway, by HTTP status.',
        samples: entities.flatMap(({ labels, c }) => [...c.codes].sort(([a], [b]) => a - b).map(([code, value]) => ({ labels: { ...labels, code: String(code) }, value }))),
      },
      {
        name: 'ferry_request_duration_seconds', type: 'histogram', bounds: REQUEST_SECONDS_BUCKETS,
        help: 'Time of an inference request in the gateway, from routing to the last byte of the answer.',
        samples: entities.map(({ labels, c }) => ({ labels, histogram: c.duration.snapshot() })),
      },
      {
        name: 'ferry_request_queue_seconds', type: 'histogram', bounds: QUEUE_SECONDS_BUCKETS,
        help: 'Time a request waited in its served entity\'s buffer for a replica with room.',
        samples: entities.filter(({ labels }) => labels.served_entity !== '').map(({ labels, c }) => ({ labels, histogram: c.queue.snapshot() })),
      },
      {
        name: 'ferry_requests_rejected_total', type: 'counter', help: 'Inference requests refused by a limit, by reason.',
        samples: eps.flatMap(([endpoint, ep]) => [...ep.rejected].sort(([a], [b]) => a.localeCompare(b)).map(([reason, value]) => ({ labels: { endpoint, reason }, value }))),
      },
      {
        name: 'ferry_inference_table_dropped_total', type: 'counter', help: 'Inference table rows dropped instead of written, by reason (queue_full, write_failed).',
        samples: eps.flatMap(([endpoint, ep]) => [...ep.tableDrops].sort(([a], [b]) => a.localeCompare(b)).map(([reason, value]) => ({ labels: { endpoint, reason }, value }))),
      },
      {
        name: 'ferry_requests_in_flight', type: 'gauge', help: 'Requests the gateway holds for a served entity now (waiting, on a replica, answering).',
        samples: gauges.map((g) => ({ labels: gaugeLabels(g), value: g.inFlight })),
      },
      {
        name: 'ferry_requests_queued', type: 'gauge', help: 'Requests waiting in a served entity\'s buffer for a replica with room.',
        samples: gauges.map((g) => ({ labels: gaugeLabels(g), value: g.queued })),
      },
      {
        name: 'ferry_replicas', type: 'gauge', help: 'Replicas of a served entity, ready or starting.',
        samples: gauges.flatMap((g) => [
          { labels: { ...gaugeLabels(g), state: 'ready' }, value: g.ready },
          { labels: { ...gaugeLabels(g), state: 'starting' }, value: g.starting },
        ]),
      },
      {
        name: 'ferry_replicas_desired', type: 'gauge', help: 'Replicas the autoscaler wants for a served entity.',
        samples: gauges.map((g) => ({ labels: gaugeLabels(g), value: g.desired })),
      },
      {
        name: 'ferry_cold_starts_total', type: 'counter', help: 'Replicas started (asked for until ready), by rollouts, scale-ups and restarts.',
        samples: entities.filter(({ c }) => c.coldStarts.snapshot().count > 0).map(({ labels, c }) => ({ labels, value: c.coldStarts.snapshot().count })),
      },
      {
        name: 'ferry_time_to_first_token_seconds', type: 'histogram', bounds: REQUEST_SECONDS_BUCKETS,
        help: 'Streamed answers: time from the request to the first chunk written to the client (an LLM\'s time to first token).',
        samples: entities.filter(({ c }) => c.firstChunk.snapshot().count > 0).map(({ labels, c }) => ({ labels, histogram: c.firstChunk.snapshot() })),
      },
      {
        name: 'ferry_generated_tokens_total', type: 'counter',
        help: 'Chunks relayed in streamed answers: one per generated text piece of an llm replica, so about one per token (tokens/s = rate of this).',
        samples: entities.filter(({ c }) => c.streamedChunks > 0).map(({ labels, c }) => ({ labels, value: c.streamedChunks })),
      },
      {
        name: 'ferry_streams_total', type: 'counter', help: 'Streamed answers by outcome (complete, failed, cancelled by the client).',
        samples: entities.flatMap(({ labels, c }) => (['complete', 'failed', 'cancelled'] as const).filter((o) => c.streams[o] > 0).map((outcome) => ({ labels: { ...labels, outcome }, value: c.streams[outcome] }))),
      },
      {
        name: 'ferry_cold_start_duration_seconds', type: 'histogram', bounds: COLD_START_SECONDS_BUCKETS,
        help: 'Time from asking for a replica to its being ready.',
        samples: entities.filter(({ c }) => c.coldStarts.snapshot().count > 0).map(({ labels, c }) => ({ labels, histogram: c.coldStarts.snapshot() })),
      },
      {
        name: 'ferry_replica_restarts_total', type: 'counter', help: 'Replicas that exited without being asked to and were replaced, by reason.',
        samples: entities.filter(({ c }) => Object.values(c.restarts).some((n) => n > 0))
          .flatMap(({ labels, c }) => Object.entries(c.restarts).map(([reason, value]) => ({ labels: { ...labels, reason }, value }))),
      },
      {
        name: 'ferry_batch_size', type: 'histogram', bounds: BATCH_ROWS_BUCKETS, help: 'Rows per model call in the replicas (a batch, or one request run alone).',
        samples: model.map(({ labels, t }) => ({ labels, histogram: t.batchRows })),
      },
      {
        name: 'ferry_model_duration_seconds', type: 'histogram', bounds: MODEL_SECONDS_BUCKETS, help: 'Time of one model call, measured in the replica.',
        samples: model.map(({ labels, t }) => ({ labels, histogram: t.modelSeconds })),
      },
      {
        name: 'ferry_replica_scrape_errors_total', type: 'counter', help: 'Replica metric reads that failed or timed out (their replica\'s numbers were left as last read).',
        samples: [...view.scrapeErrors].filter(([endpoint]) => view.visible(endpoint)).sort(([a], [b]) => a.localeCompare(b))
          .map(([endpoint, value]) => ({ labels: { endpoint }, value })),
      },
    ];
  }
}
