/**
 * The gateway (data plane): the inference routes clients call. Per request: authenticate (the
 * server's middleware), apply the endpoint's rate limits (./rate-limit.ts), read the body within
 * the endpoint's limit (or the server's), pick a served entity by traffic weight and
 * a replica by power of two choices, forward through the replica's channel, answer with the
 * replica's response and a `served-model-name` header. The body is forwarded as received: the
 * replica parses and validates it. The request id and trace context the server's `requestTracing`
 * step chose go to the replica with the request (docs/observability.md, "Logs and tracing").
 *
 * This file wires the routes; each step is its own module: ./observe.ts (event, debug line,
 * spans), ./forward.ts (entity pick, fallback, shadows, the answer) with ./send.ts (to a replica)
 * and ./relay.ts (a streamed answer, a client gone), ./bodies.ts (body limits, the OpenAI body read
 * once), ./family.ts (model families), ./openai-routes.ts, ./v2-routes.ts, ./error-bodies.ts.
 */
import { access, type ServerRouter } from '../auth/index.js';
import type { Handler } from '../http/index.js';
import { InferenceBodies } from './bodies.js';
import { FamilyTargets } from './family.js';
import { Forwarder } from './forward.js';
import { observer } from './observe.js';
import { OpenAiRoutes } from './openai-routes.js';
import type { GatewayOptions } from './options.js';
import { rateLimited } from './rate-limit.js';
import type { RoutingTable } from './routing.js';
import { v2, V2Routes, v2Version } from './v2-routes.js';

export { RoutingTable, pickAffine, pickBackend, pickEntity, modelAffinity, AFFINITY_LOAD_FACTOR, type Backend, type EndpointRoute, type EntityRoute } from './routing.js';
export { EntityTraffic, type TrafficOptions } from './traffic.js';
export { RATE_LIMIT_KEYS, RENEWAL_PERIOD_MS, RateLimiter, TokenMeter, type Admission, type RateLimit, type RateLimitKey, type RenewalPeriod } from './rate-limit.js';
export { GatewayStats, statsKey, type StatsSummary } from './stats.js';
export { drainAndClose } from './drain.js';
export { GATEWAY_REQUEST_CHANNEL, GATEWAY_STREAM_CHANNEL, gatewayRequests, gatewayStreams, type GatewayRequestEvent, type GatewayStreamEvent } from './events.js';
export { errorBodyFor } from './error-bodies.js';
export type { GatewayOptions } from './options.js';

/** Access: inference needs CAN_QUERY on the endpoint; metadata and readiness CAN_VIEW. */
export function gatewayRoutes(router: ServerRouter, table: RoutingTable, opts: GatewayOptions): void {
  const bodies = new InferenceBodies(opts);
  const forwarder = new Forwarder(table, opts, bodies, new FamilyTargets(opts));
  const openAi = new OpenAiRoutes(table, opts, bodies, forwarder);
  const v2Routes = new V2Routes(table, opts, forwarder);
  const observed = observer(opts);
  const add = (method: 'GET' | 'POST', pattern: string, inference: boolean, h: Handler): void => {
    router.add(method, pattern, observed(method, pattern, inference, h), access.endpoint(inference ? 'CAN_QUERY' : 'CAN_VIEW'));
  };

  // OpenAI-compatible routes: the endpoint is the body's `model`; the same bodies are also
  // accepted at /serving-endpoints/{name}/invocations of an llm endpoint (the replica tells them apart).
  const addOpenAi = (pattern: string): void => {
    router.add('POST', pattern, observed('POST', pattern, true, openAi.inference(pattern)), access.endpoint('CAN_QUERY', bodies.modelOf));
  };
  addOpenAi('/v1/chat/completions');
  addOpenAi('/v1/completions');
  addOpenAi('/v1/embeddings');
  router.add('GET', '/v1/models', openAi.models, access.user);
  // `models.retrieve`: an endpoint the caller may view, else 404 (in OpenAI's shape, as on every /v1 route).
  router.add('GET', '/v1/models/:id', openAi.model, access.endpoint('CAN_VIEW', openAi.modelId));

  // OIP v2 server metadata: public, like the health routes (it names no endpoint).
  router.add('GET', '/v2', v2Routes.metadata, access.public);
  // OIP v2 model repository index: the endpoints the caller may view, one entry per served model
  // version. Its load and unload are not served: endpoints come and go through the serving-endpoints API.
  router.add('POST', '/v2/repository/index', v2Routes.repositoryIndex, access.user);

  // Rate limits count inference calls only, not metadata or readiness probes.
  add('POST', '/serving-endpoints/:name/invocations', true, forwarder.withRoute(rateLimited(forwarder.forward(() => '/invocations', 'ferry', 'invocations'))));
  add('POST', '/v2/models/:name/infer', true, forwarder.withRoute(rateLimited(forwarder.forward(v2('/infer'), 'v2', 'infer'))));
  add('POST', '/v2/models/:name/versions/:version/infer', true, forwarder.withRoute(rateLimited(forwarder.forward(v2Version('/infer'), 'v2', 'infer'))));
  add('GET', '/v2/models/:name', false, forwarder.withRoute(forwarder.forward(v2(''), 'v2', 'metadata')));
  add('GET', '/v2/models/:name/versions/:version', false, forwarder.withRoute(forwarder.forward(v2Version(''), 'v2', 'metadata')));
  // OIP v2 model configuration extension: built by the replica from the signature and batching.
  add('GET', '/v2/models/:name/config', false, forwarder.withRoute(forwarder.forward(v2('/config'), 'v2')));
  add('GET', '/v2/models/:name/versions/:version/config', false, forwarder.withRoute(forwarder.forward(v2Version('/config'), 'v2')));
  add('GET', '/v2/models/:name/ready', false, v2Routes.ready);
  add('GET', '/v2/models/:name/versions/:version/ready', false, v2Routes.ready);
}
