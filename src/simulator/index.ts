/**
 * The simulator plane: replays recorded or generated traffic through the real autoscaling policy
 * in virtual time and reports what a scaling config would have cost and how slow it would have been.
 */
export { simulate, TICK_MS, type ReplicaModel, type ServiceTime, type SimulationOptions, type SimulationResult, type TimelinePoint } from './engine.js';
export {
  BUNDLED_TRACES, MAX_TRACE_REQUESTS, PATTERNS, checkPattern, generateTrace, parseTraceText, seededRandom, traceFromRates, traceFromTimes, traceRequests,
  type Pattern, type PatternParams, type RateTrace, type RequestTrace, type Trace,
} from './trace.js';
export { KNATIVE_DEFAULTS, SEARCH_GRID, meets, recommend, staticForPeak, type Goal, type Recommendation, type Setting } from './recommend.js';
export {
  DEFAULT_COLD_START_MS, DEFAULT_SERVICE_TIME_MS, MAX_RECOMMEND_REQUESTS, localTrace, parseSimulateRequest, runSimulation, simulateRequestSchema,
  type SimulateAnswer, type SimulateRequest, type SimulateRequestInput, type SimulationContext, type TraceSource,
} from './request.js';
export { scalingFieldsOf, simulatorRoutes, type SimulatorApiDeps } from './api.js';
