/**
 * The simulator plane: replays recorded or generated traffic through the real autoscaling policy
 * in virtual time and reports what a scaling config would have cost and how slow it would have been.
 */
export { simulate, TICK_MS, type ReplicaModel, type ServiceTime, type SimulationOptions, type SimulationResult, type TimelinePoint } from './engine.js';
export {
  BUNDLED_TRACES, MAX_TRACE_REQUESTS, PATTERNS, checkPattern, generateTrace, parseTraceText, seededRandom, traceFromRates, traceFromTimes, traceRequests,
  type Pattern, type PatternParams, type RateTrace, type RequestTrace, type Trace,
} from './trace.js';
