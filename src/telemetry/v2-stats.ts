/**
 * The OIP v2 statistics extension (`GET /v2/models[/{name}[/versions/{v}]]/stats`), in Triton's
 * shape, from the counters the gateway's request events and the replicas' model-call metrics
 * already feed: per served entity, `name` is the endpoint and `version` the model version it serves.
 * - `inference_stats.success` / `fail`: answers under 400 / the others, with their time in the gateway;
 * - `inference_stats.queue`: time waiting in the entity's buffer for a replica with room;
 * - `inference_stats.compute_infer`: model calls and their time, measured in the replicas;
 * - `inference_count`: rows the model ran, `execution_count`: model calls (a batch is one call).
 * Triton's input/output conversion times (`compute_input`, `compute_output`) and per-batch-size
 * `batch_stats` are not measured: they are reported as zero and empty.
 */
import type { EntityCounters } from './metrics.js';
import type { EntityModelTotals } from './scrape.js';

interface Duration {
  count: number;
  ns: number;
}

export interface V2ModelStats {
  name: string;
  version: string;
  /** Milliseconds since the epoch of the last answer. */
  last_inference: number;
  inference_count: number;
  execution_count: number;
  inference_stats: { success: Duration; fail: Duration; queue: Duration; compute_input: Duration; compute_infer: Duration; compute_output: Duration };
  batch_stats: never[];
}

const ns = (seconds: number): number => Math.round(seconds * 1e9);
const NONE: Duration = { count: 0, ns: 0 };

/** One served entity's statistics; `model` is its replicas' totals (undefined before the first scrape). */
export function v2ModelStats(endpoint: string, c: Readonly<EntityCounters>, model: EntityModelTotals | undefined): V2ModelStats {
  const queue = c.queue.snapshot();
  return {
    name: endpoint,
    version: c.modelVersion,
    last_inference: c.lastMs,
    inference_count: model?.batchRows.sum ?? 0,
    execution_count: model?.batchRows.count ?? 0,
    inference_stats: {
      success: { count: c.success.count, ns: ns(c.success.seconds) },
      fail: { count: c.fail.count, ns: ns(c.fail.seconds) },
      queue: { count: queue.count, ns: ns(queue.sum) },
      compute_input: NONE,
      compute_infer: { count: model?.modelSeconds.count ?? 0, ns: ns(model?.modelSeconds.sum ?? 0) },
      compute_output: NONE,
    },
    batch_stats: [],
  };
}
