/**
 * MLflow tracking: experiments and runs (params, metrics, tags, dataset inputs, logged models)
 * over MLflow's REST API 2.0, stored by the metadata store (`store.tracking`), with run artifacts
 * in Ferry's artifact store behind the `mlflow-artifacts` proxy. See api.ts.
 */
export { trackingRoutes, runJson, experimentJson, TRACKING_LIMITS, type TrackingApiOptions } from './api.js';
export { parseSearchFilter, parseOrderBy, matches, comparator, type Clause, type Entity, type OrderKey } from './search.js';
