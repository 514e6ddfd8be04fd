/**
 * Inference tables (Databricks' `ai_gateway.inference_table_config`): one row per sampled
 * inference call of an endpoint that has the table enabled, with the request and response bodies,
 * kept in their own store (`<data-dir>/inference.db`) for `inferenceTableRetention`. The writer
 * subscribes to the gateway's events and never slows a response; the API pages and exports rows.
 * See docs/observability.md.
 */
export {
  FLUSH_BATCH_ROWS, FLUSH_INTERVAL_MS, INFERENCE_TABLE_DROP_CHANNEL, InferenceTableWriter, MAX_LOGGED_BODY_BYTES, MAX_QUEUED_BODY_BYTES, omittedBody,
  type InferenceTableCounts, type InferenceTableDropEvent, type InferenceTableSettings, type InferenceTableWriterOptions,
} from './writer.js';
export { COLUMNS, MAX_PAGE_ROWS, csvField, inferenceTableRoutes, rowView, type InferenceTableApiDeps } from './api.js';
