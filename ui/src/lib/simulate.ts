/**
 * The autoscaling editor's logic ("what would this have cost?"): the form ↔ a served entity's
 * scaling fields, the `POST .../simulate` body (checked here with the API's ranges, so the form
 * shows a mistake before it is sent), the comparison table and the charts of the answer, and the
 * config to save once the candidate looks right.
 */
import { entityInput } from './config.js';
import type { ChartData } from './series.js';
import type { EndpointConfigInput, EndpointConfigView, ScalingFields, ServedEntityView, SimulateAnswer, SimulationResult } from './types.js';

/** Where the trace comes from: the endpoint's own traffic, or a bundled trace. */
export const TRACE_SOURCES = [
  { value: 'series', label: 'this endpoint, last hour (per-5-s request rate)' },
  { value: 'inference_table', label: 'this endpoint, last day (inference-table timestamps)' },
  { value: 'diurnal', label: 'bundled: a day-shaped day' },
  { value: 'bursty', label: 'bundled: an hour with bursts' },
] as const;
export type TraceChoice = (typeof TRACE_SOURCES)[number]['value'];

/** The editor's inputs, as typed (strings), per served entity. */
export interface ScalingForm {
  entity: string;
  source: TraceChoice;
  targetConcurrency: string;
  scaleToZero: boolean;
  /** Empty: the workload size's bound. */
  minProvisionedConcurrency: string;
  maxProvisionedConcurrency: string;
  stableWindowS: string;
  scaleDownDelayS: string;
  scaleToZeroGraceS: string;
  /** Empty: no recommendation. */
  targetP99Ms: string;
  /** Empty: no cost column. */
  pricePerReplicaHour: string;
}

/** The form filled with an entity's settings in effect. */
export function formOf(e: ServedEntityView, source: TraceChoice = 'series'): ScalingForm {
  const a = e.autoscaling;
  const s = (ms: number | undefined, dflt: number): string => String((ms ?? dflt) / 1000);
  return {
    entity: e.name, source,
    targetConcurrency: String(a?.target_concurrency ?? 4),
    scaleToZero: e.scale_to_zero_enabled,
    minProvisionedConcurrency: e.min_provisioned_concurrency === undefined ? '' : String(e.min_provisioned_concurrency),
    maxProvisionedConcurrency: e.max_provisioned_concurrency === undefined ? '' : String(e.max_provisioned_concurrency),
    stableWindowS: s(a?.stable_window_ms, 30_000), scaleDownDelayS: s(a?.scale_down_delay_ms, 10_000), scaleToZeroGraceS: s(a?.scale_to_zero_grace_ms, 30_000),
    targetP99Ms: '', pricePerReplicaHour: '',
  };
}

/** The form with a recommended setting applied. */
export function withSetting(f: ScalingForm, s: NonNullable<NonNullable<SimulateAnswer['recommendation']>['setting']>): ScalingForm {
  return { ...f, targetConcurrency: String(s.target_concurrency), scaleToZero: s.scale_to_zero_enabled, stableWindowS: String(s.stable_window_ms / 1000), scaleDownDelayS: String(s.scale_down_delay_ms / 1000) };
}

/** A checked form: the candidate's scaling fields and the request body, or what is wrong. */
export interface CheckedForm {
  errors: string[];
  fields?: ScalingFields;
  body?: Record<string, unknown>;
}

/**
 * Checks the form with the API's ranges (src/autoscaler/policy.ts, src/control/config.ts).
 * Example: target "0" → "target concurrency: expected a number from 0.1 to 1000, got 0".
 */
export function checkForm(f: ScalingForm): CheckedForm {
  const errors: string[] = [];
  const num = (label: string, raw: string, lo: number, hi: number, integer = false, optional = false): number | undefined => {
    if (optional && raw.trim() === '') return undefined;
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || n < lo || n > hi || (integer && !Number.isInteger(n))) {
      errors.push(`${label}: expected ${integer ? 'an integer' : 'a number'} from ${lo} to ${hi}, got ${raw.trim() === '' ? 'nothing' : raw}`);
      return undefined;
    }
    return n;
  };
  const target = num('target concurrency', f.targetConcurrency, 0.1, 1000);
  const min = num('min provisioned concurrency', f.minProvisionedConcurrency, 0, 100_000, true, true);
  const max = num('max provisioned concurrency', f.maxProvisionedConcurrency, 1, 100_000, true, true);
  const stable = num('stable window (s)', f.stableWindowS, 1, 3600);
  const delay = num('scale-down delay (s)', f.scaleDownDelayS, 0, 3600);
  const grace = num('scale-to-zero grace (s)', f.scaleToZeroGraceS, 0, 3600);
  const p99 = num('target p99 (ms)', f.targetP99Ms, 0.001, 3_600_000, false, true);
  const price = num('price per replica-hour', f.pricePerReplicaHour, 0, 1e6, false, true);
  if (min !== undefined && max !== undefined && min > max) errors.push(`min provisioned concurrency: expected at most max provisioned concurrency (${max}), got ${min}`);
  if (errors.length > 0 || target === undefined || stable === undefined || delay === undefined || grace === undefined) return { errors };
  const ms = (s: number): number => Math.round(s * 1000);
  const fields: ScalingFields = {
    scale_to_zero_enabled: f.scaleToZero,
    ...(min === undefined ? {} : { min_provisioned_concurrency: min }),
    ...(max === undefined ? {} : { max_provisioned_concurrency: max }),
    autoscaling: { target_concurrency: target, stable_window_ms: ms(stable), scale_down_delay_ms: ms(delay), scale_to_zero_grace_ms: ms(grace) },
  };
  const trace = f.source === 'diurnal' || f.source === 'bursty' ? { source: 'bundled', name: f.source } : { source: f.source };
  return {
    errors,
    fields,
    body: {
      served_entity_name: f.entity, candidate: fields, trace,
      ...(price === undefined ? {} : { price_per_replica_hour: price }),
      ...(p99 === undefined ? {} : { recommend: { target_p99_ms: p99 } }),
    },
  };
}

/** The endpoint's config with `fields` applied to `entity` (everything else unchanged): what Save sends. */
export function configWithScaling(c: EndpointConfigView, entity: string, fields: ScalingFields): EndpointConfigInput {
  return {
    served_entities: c.served_entities.map((e) => {
      const input = entityInput(e);
      if (e.name !== entity) return input;
      const { min_provisioned_concurrency: _min, max_provisioned_concurrency: _max, ...rest } = input;
      return { ...rest, ...fields, ...(input.autoscaling === undefined ? {} : { autoscaling: { ...input.autoscaling, ...fields.autoscaling } }) } as EndpointConfigInput['served_entities'][number];
    }),
    traffic_config: c.traffic_config,
    ...(c.request_timeout_ms === undefined ? {} : { request_timeout_ms: c.request_timeout_ms }),
    ...(c.rollout === undefined ? {} : { rollout: c.rollout }),
  };
}

/** The table's rows: current, candidate, and with a recommendation, it and its references. */
export function comparisonRows(a: SimulateAnswer): Array<{ label: string; result: SimulationResult }> {
  const rows: Array<{ label: string; result: SimulationResult }> = [];
  if (a.current !== null) rows.push({ label: 'current', result: a.current.result });
  rows.push({ label: 'candidate', result: a.candidate.result });
  const r = a.recommendation;
  if (r?.result) rows.push({ label: 'recommended', result: r.result });
  if (r?.static_peak) rows.push({ label: `static ${r.static_peak.replicas} (peak)`, result: r.static_peak.result });
  if (r) rows.push({ label: 'Knative defaults', result: r.knative_defaults });
  return rows;
}

/** The comparison charts: lines current and candidate, x in seconds ending at `endMs`. */
export const SIMULATION_CHARTS = [
  { id: 'sim-replicas', title: 'Replicas (simulated)', unit: '', value: (p: SimulationResult['timeline'][number]) => p.replicas },
  { id: 'sim-p99', title: 'p99 latency (simulated)', unit: 'ms', value: (p: SimulationResult['timeline'][number]) => p.p99_ms },
] as const;

/**
 * One chart's columns: x = the trace's start (`endMs` − its duration) + each point's offset.
 * Example: a 60 s trace ending at 1 000 000 ms, points at 0 and 30 s → x = [940, 970].
 */
export function simulationChart(a: SimulateAnswer, chart: (typeof SIMULATION_CHARTS)[number], endMs: number): { labels: string[]; data: ChartData } {
  const runs = a.current === null ? [a.candidate.result] : [a.current.result, a.candidate.result];
  const labels = a.current === null ? ['candidate'] : ['current', 'candidate'];
  const start = endMs / 1000 - a.candidate.result.duration_s;
  const xs = a.candidate.result.timeline.map((p) => start + p.t_s);
  return { labels, data: [xs, ...runs.map((r) => r.timeline.map((p) => chart.value(p)))] };
}
