/**
 * Request ids, W3C trace context and span export (docs/observability.md, "Logs and tracing").
 *
 * - `requestTracing()`: the server's first middleware; `traceOf(ctx)` reads what it decided.
 * - `OtlpExporter`: batches spans to an OTLP/HTTP collector (`otlpEndpoint`).
 * - `parseTraceparent`, `formatTraceparent`, `newSpanId`, …: the pieces, also used by replicas.
 */
export { formatTraceparent, newSpanId, parseTraceparent, requestIdFrom, tracestateFrom, type TraceParent } from './context.js';
export { requestTracing, traceOf, unixMicros, type RequestTrace } from './middleware.js';
export { encodeSpans, OtlpExporter, type ExportStats, type OtlpExporterOptions, type Span } from './otlp.js';
