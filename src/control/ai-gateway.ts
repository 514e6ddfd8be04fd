/**
 * An endpoint's AI gateway settings (Databricks `ai_gateway`): the request shape → validated →
 * compiled `AiGatewayConfig` the gateway's route uses, and back to the API shape for views.
 */
import { z } from 'zod';
import type { AiGatewaySettings } from '../api/index.js';
import { configError } from '../config/index.js';
import { invalidParameter } from '../errors.js';
import { RATE_LIMIT_KEYS, RENEWAL_PERIOD_MS, type RateLimit, type RenewalPeriod } from '../gateway/index.js';

const positiveInt = z.number({ error: 'expected a positive integer' }).int({ error: 'expected a positive integer' }).positive({ error: 'expected a positive integer' });

/**
 * Databricks `ai_gateway`: `fallback_config`, `rate_limits` (calls or tokens per minute, per user
 * or per endpoint) and `inference_table_config`, plus the Ferry extension `input_limits`.
 */
export const aiGatewaySchema = z.strictObject({
  fallback_config: z.strictObject({ enabled: z.boolean() }).optional(),
  rate_limits: z.array(z.strictObject({
    // Exactly one of the two (checked by compileAiGateway, which names the field).
    calls: positiveInt.optional(),
    tokens: positiveInt.optional(),
    renewal_period: z.enum(Object.keys(RENEWAL_PERIOD_MS) as [RenewalPeriod, ...RenewalPeriod[]], { error: `expected ${Object.keys(RENEWAL_PERIOD_MS).map((p) => `"${p}"`).join(' or ')}` }),
    // Databricks' default: a limit counts each caller separately.
    key: z.enum(RATE_LIMIT_KEYS, { error: `expected ${RATE_LIMIT_KEYS.map((k) => `"${k}"`).join(' or ')}` }).default('user'),
  }), { error: 'expected an array of {"calls" or "tokens", "renewal_period", "key"} objects' }).optional(),
  /** Ferry extension: a per-endpoint cap on inference request bodies, below the server's `maxBodySize`. */
  input_limits: z.strictObject({
    max_body_bytes: positiveInt.optional(),
  }).optional(),
  /**
   * Databricks' inference table, kept in Ferry's own store (no catalog/schema fields), plus the
   * Ferry extension `sample_fraction` (see docs/observability.md).
   */
  inference_table_config: z.strictObject({
    enabled: z.boolean({ error: 'expected true or false' }),
    sample_fraction: z.number({ error: 'expected a number with 0 < sample_fraction <= 1' }).gt(0, { error: 'expected a number with 0 < sample_fraction <= 1' }).max(1, { error: 'expected a number with 0 < sample_fraction <= 1' }).default(1),
  }).optional(),
});

export interface AiGatewayConfig {
  /** A 5xx or unreachable replica on one served entity is retried on the next ones, in route order. */
  fallbackEnabled: boolean;
  /** At most one per key; empty: unlimited. */
  rateLimits: RateLimit[];
  /** Largest inference request body for this endpoint; undefined: the server's `maxBodySize`. */
  maxBodyBytes: number | undefined;
  /** Whether inference calls are logged, and the share of them (0-1]; absent: never configured. */
  inferenceTable?: { enabled: boolean; sampleFraction: number };
}

/**
 * Validates an `ai_gateway` body (create: `field` "ai_gateway"; PUT .../ai-gateway: ""). A rate
 * limit has exactly one of `calls` and `tokens`, and a key has at most one limit of each;
 * `input_limits.max_body_bytes` may not exceed the server's `maxBodyBytes` (the server reads no
 * more than that for any request).
 */
export function compileAiGateway(raw: unknown, server: { maxBodyBytes: number }, field = 'ai_gateway'): AiGatewayConfig {
  const prefix = field === '' ? '' : `${field}.`;
  const r = aiGatewaySchema.safeParse(raw ?? {});
  if (!r.success) throw configError(r.error, raw, prefix);
  const rateLimits: RateLimit[] = [];
  for (const [i, l] of (r.data.rate_limits ?? []).entries()) {
    const where = `${prefix}rate_limits[${i}]`;
    const { calls, tokens, renewal_period: renewalPeriod, key } = l;
    if (calls !== undefined && tokens !== undefined) throw invalidParameter(`${where}.tokens`, tokens, 'no "tokens" next to "calls" (a limit counts either calls or tokens; add a second limit for the other)');
    const limit: RateLimit | undefined = calls !== undefined ? { calls, renewalPeriod, key } : tokens !== undefined ? { tokens, renewalPeriod, key } : undefined;
    if (limit === undefined) throw invalidParameter(`${where}.calls`, undefined, 'a positive integer (or "tokens" for a token limit)');
    const unit = unitOf(limit);
    const same = rateLimits.findIndex((x) => x.key === key && unitOf(x) === unit);
    if (same !== -1) throw invalidParameter(`${where}.key`, key, `at most one ${unit} limit per key (rate_limits[${same}] already limits ${unit} with key "${key}")`);
    rateLimits.push(limit);
  }
  const maxBodyBytes = r.data.input_limits?.max_body_bytes;
  if (maxBodyBytes !== undefined && maxBodyBytes > server.maxBodyBytes) {
    throw invalidParameter(`${prefix}input_limits.max_body_bytes`, maxBodyBytes, `at most the server's maxBodySize of ${server.maxBodyBytes} bytes (raise maxBodySize in the server config to allow more)`);
  }
  const table = r.data.inference_table_config;
  return {
    fallbackEnabled: r.data.fallback_config?.enabled ?? false, rateLimits, maxBodyBytes,
    ...(table === undefined ? {} : { inferenceTable: { enabled: table.enabled, sampleFraction: table.sample_fraction } }),
  };
}

const unitOf = (l: RateLimit): 'calls' | 'tokens' => ('tokens' in l ? 'tokens' : 'calls');

/** The API (Databricks) shape of compiled AI gateway settings; unset parts are left out. */
export function aiGatewayView(a: AiGatewayConfig): AiGatewaySettings {
  return {
    ...(a.rateLimits.length === 0 ? {} : {
      rate_limits: a.rateLimits.map((l) => ({ ...('tokens' in l ? { tokens: l.tokens } : { calls: l.calls }), renewal_period: l.renewalPeriod, key: l.key })),
    }),
    fallback_config: { enabled: a.fallbackEnabled },
    ...(a.maxBodyBytes === undefined ? {} : { input_limits: { max_body_bytes: a.maxBodyBytes } }),
    ...(a.inferenceTable === undefined ? {} : { inference_table_config: { enabled: a.inferenceTable.enabled, sample_fraction: a.inferenceTable.sampleFraction } }),
  };
}
