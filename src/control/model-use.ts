/** Which endpoints serve a registered model, from their stored configs (current and pending). */
import type { EndpointRecord } from '../store/index.js';
import type { EndpointConfig } from './config.js';

/** The names of the endpoints whose current or pending config serves `model` by name. */
export function endpointsServing(records: readonly EndpointRecord[], model: string): string[] {
  const serves = (c: unknown): boolean => (c as EndpointConfig | undefined)?.servedEntities.some((e) => e.family === undefined && e.entityName === model) ?? false;
  return records.filter((r) => serves(r.config) || serves(r.pendingConfig)).map((r) => r.name);
}
