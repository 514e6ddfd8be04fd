/** What the gateway's routes are set up with (`gatewayRoutes`), shared by the modules that serve them. */
import type { Authorizer } from '../auth/index.js';
import type { LogFn, LogLevel } from '../logs/index.js';
import type { OtlpExporter } from '../tracing/index.js';
import type { GatewayStats } from './stats.js';

export interface GatewayOptions {
  maxBodyBytes: number;
  /** Per served entity status and latency, for canary analysis (in a gateway worker: sent to the primary). */
  stats: Pick<GatewayStats, 'record'>;
  /** The server's log; at `logLevel` debug the gateway logs one line per request. */
  log: LogFn;
  logLevel: LogLevel;
  /** Where spans go (`otlpEndpoint`); undefined: no spans are made. */
  exporter: OtlpExporter | undefined;
  /** Filters `GET /v1/models` to the endpoints the caller may view. */
  authz: Authorizer;
}
