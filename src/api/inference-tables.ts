/**
 * The inference table API's shapes (`/api/2.0/serving-endpoints/{name}/inference-table`): logged
 * inference calls, a page at a time (newest first), and the writer's counts.
 */

/**
 * One logged inference call. Every row has every column: an absent value is null. `request` and
 * `response` are the bodies as text (JSON for the scoring protocols), null when not logged.
 */
export interface InferenceTableRow {
  request_id: string;
  client_request_id: string | null;
  endpoint_name: string;
  timestamp_ms: number;
  status_code: number;
  error_code: string | null;
  execution_time_ms: number;
  served_entity: string;
  model_name: string;
  model_version: string;
  principal: string;
  request: string | null;
  response: string | null;
  sampling_fraction: number;
}

/** `GET .../inference-table`: a page of rows; `next_page_token` is absent on the last page. */
export interface InferenceTablePage {
  rows: InferenceTableRow[];
  next_page_token?: string;
}

/** `GET .../inference-table/status`: whether the table is on and the writer's row counts since the server started. */
export interface InferenceTableStatus {
  enabled: boolean;
  sample_fraction: number;
  queued_rows: number;
  written_rows: number;
  dropped_rows: number;
}
