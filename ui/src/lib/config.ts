/**
 * Endpoint configs the console writes: the one-click Serve, a new traffic split, another version
 * added to an endpoint. Checked here as the API checks them (src/control/config.ts), so a form
 * shows the problem before it is sent; the API's answer still has the last word.
 */
import type { AutoscalingTunables, EndpointConfigInput, EndpointConfigView, Route, ServedEntityInput, ServedEntityView } from './types.js';

/** Endpoint and served entity names: 1-63 letters, digits, "-" or "_", starting with a letter or digit. */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** A name made of `raw` that NAME_RE accepts: "My Model.v2" → "My-Model-v2". */
export function toName(raw: string): string {
  const s = raw.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^[-_]+/, '').slice(0, 63);
  return s === '' ? 'endpoint' : s;
}

/**
 * The one-click Serve: an endpoint named after the model (or `<model>-<version>`, then with a
 * counter, when taken) serving the version with the server's defaults (Small CPU workload,
 * 100% traffic, no scale to zero).
 */
export function serveRequest(model: string, version: string, taken: ReadonlySet<string>): { name: string; config: EndpointConfigInput } {
  const base = toName(model);
  const candidates = [base, toName(`${base}-${version}`)];
  for (let i = 2; candidates.length < 100; i++) candidates.push(toName(`${base}-${version}-${i}`));
  const name = candidates.find((c) => !taken.has(c)) ?? `${base}-${Date.now()}`;
  return { name, config: { served_entities: [{ entity_name: model, entity_version: version }] } };
}

/** A served entity's config as input, unchanged, so that rewriting it restarts nothing. */
export function entityInput(e: ServedEntityView): ServedEntityInput {
  return {
    name: e.name,
    // The resolved version, not the alias: an alias moved since would swap the model. An entity
    // that follows its alias keeps following it (it serves the alias' version already).
    ...(e.model_family !== undefined ? { model_family: e.model_family }
      : e.follow_alias === true && e.entity_alias !== undefined ? { entity_name: e.entity_name ?? '', entity_version: e.entity_alias, follow_alias: true }
        : { entity_name: e.entity_name ?? '', entity_version: e.entity_version ?? '' }),
    workload_size: e.workload_size,
    workload_type: e.workload_type,
    scale_to_zero_enabled: e.scale_to_zero_enabled,
    ...(e.min_provisioned_concurrency === undefined ? {} : { min_provisioned_concurrency: e.min_provisioned_concurrency }),
    ...(e.max_provisioned_concurrency === undefined ? {} : { max_provisioned_concurrency: e.max_provisioned_concurrency }),
    ...(e.autoscaling === undefined ? {} : { autoscaling: tunablesOf(e.autoscaling) }),
    ...(e.batching === undefined ? {} : { batching: e.batching }),
    ...(e.validation_request === undefined ? {} : { validation_request: e.validation_request }),
  };
}

function tunablesOf(a: AutoscalingTunables): AutoscalingTunables {
  return {
    target_concurrency: a.target_concurrency, stable_window_ms: a.stable_window_ms, panic_window_ms: a.panic_window_ms,
    panic_threshold: a.panic_threshold, scale_down_delay_ms: a.scale_down_delay_ms, scale_to_zero_grace_ms: a.scale_to_zero_grace_ms,
    max_scale_up_rate: a.max_scale_up_rate,
  };
}

/** The current config with `routes` as its traffic split (shadow routes, timeout and rollout kept). */
export function configWithRoutes(c: EndpointConfigView, routes: Route[]): EndpointConfigInput {
  return {
    served_entities: c.served_entities.map(entityInput),
    traffic_config: { routes, ...(c.traffic_config.shadow_routes ? { shadow_routes: c.traffic_config.shadow_routes } : {}) },
    ...(c.request_timeout_ms === undefined ? {} : { request_timeout_ms: c.request_timeout_ms }),
    ...(c.rollout === undefined ? {} : { rollout: c.rollout }),
  };
}

/**
 * The current config plus `model` version `version` as a new served entity at 0% traffic: it
 * starts and is validated, and the traffic split editor then moves traffic to it.
 */
export function configWithEntity(c: EndpointConfigView, model: string, version: string): EndpointConfigInput {
  const name = toName(`${model.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 50)}-${version}`);
  if (c.served_entities.some((e) => e.name === name)) throw new Error(`This endpoint already serves '${name}'.`);
  const out = configWithRoutes(c, [...c.traffic_config.routes.map((r) => ({ served_entity_name: r.served_entity_name, traffic_percentage: r.traffic_percentage })), { served_entity_name: name, traffic_percentage: 0 }]);
  out.served_entities.push({ name, entity_name: model, entity_version: version });
  return out;
}

/** One row of the traffic split editor: a served entity and the percentage typed for it. */
export interface TrafficInput {
  name: string;
  value: string;
}

/**
 * Checks a traffic split as the API does: whole percentages from 0 to 100, one per served
 * entity, adding up to 100. `[{a: "90"}, {b: "10"}]` → routes; `[{a: "90"}, {b: "5"}]` → the
 * error "... add up to 100 (they add up to 95)".
 */
export function validateTraffic(rows: readonly TrafficInput[]): { routes: Route[]; errors: [] } | { routes: undefined; errors: string[] } {
  const errors: string[] = [];
  const routes: Route[] = [];
  rows.forEach((r, i) => {
    const text = r.value.trim();
    const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isInteger(n) || n < 0 || n > 100) {
      errors.push(`Invalid value ${JSON.stringify(r.value)} for 'traffic_config.routes[${i}].traffic_percentage' (${r.name}): expected a whole number from 0 to 100.`);
    } else {
      routes.push({ served_entity_name: r.name, traffic_percentage: n });
    }
  });
  const names = new Set(rows.map((r) => r.name));
  if (names.size !== rows.length) errors.push('Each served entity may appear in one route only.');
  if (errors.length === 0) {
    const total = routes.reduce((a, r) => a + r.traffic_percentage, 0);
    if (total !== 100) errors.push(`Invalid value [${routes.map((r) => r.traffic_percentage).join(', ')}] for 'traffic_config.routes': expected traffic percentages that add up to 100 (they add up to ${total}).`);
  }
  return errors.length === 0 ? { routes, errors: [] } : { routes: undefined, errors };
}
