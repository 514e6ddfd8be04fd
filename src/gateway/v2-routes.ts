/**
 * The Open Inference Protocol (v2) routes the gateway answers itself: server metadata, the model
 * repository index and model readiness; and the replica paths of the v2 routes it forwards.
 */
import { identityOf } from '../auth/index.js';
import { parseJson, readBody, type Context, type Handler, type Reply } from '../http/index.js';
import { FERRY_VERSION } from '../version.js';
import { noReplica, type Forwarder } from './forward.js';
import type { GatewayOptions } from './options.js';
import type { EndpointRoute, EntityRoute, RoutingTable } from './routing.js';

/**
 * The OIP v2 extensions Ferry serves whole (`GET /v2`). Of `model_repository` only the index is
 * served (no load / unload), so it is not listed.
 */
const V2_EXTENSIONS = ['binary_tensor_data', 'model_configuration', 'statistics'];

/** The replica path of a v2 route of the endpoint (`suffix` after the model). */
export const v2 = (suffix: string) => (_ctx: Context, r: EndpointRoute): string => `/v2/models/${encodeURIComponent(r.name)}${suffix}`;
/** The replica path of a v2 route of one version of the endpoint. */
export const v2Version = (suffix: string) => (ctx: Context, r: EndpointRoute): string =>
  `/v2/models/${encodeURIComponent(r.name)}/versions/${encodeURIComponent(ctx.params.version ?? '')}${suffix}`;

export class V2Routes {
  constructor(private readonly table: RoutingTable, private readonly opts: Pick<GatewayOptions, 'maxBodyBytes' | 'authz'>, private readonly forwarder: Forwarder) {}

  /** OIP v2 server metadata (`GET /v2`). */
  readonly metadata: Handler = () => ({ body: { name: 'ferry', version: FERRY_VERSION, extensions: V2_EXTENSIONS } });

  /** OIP v2 model repository index: the endpoints the caller may view, one entry per served model version. */
  readonly repositoryIndex: Handler = async (ctx) => {
    const body = await readBody(ctx.req, this.opts.maxBodyBytes);
    const filter = body.length === 0 ? {} : parseJson(body);
    const readyOnly = typeof filter === 'object' && filter !== null && (filter as { ready?: unknown }).ready === true;
    const visible = await this.opts.authz.visible(identityOf(ctx), 'serving-endpoint');
    const models = this.table.names().filter(visible).flatMap((name) => repositoryEntries(this.table.get(name)));
    return { body: readyOnly ? models.filter((m) => m.state === 'READY') : models };
  };

  /** OIP v2 model readiness: of the endpoint, or of the version its path names. */
  readonly ready: Handler = (ctx) => readiness(this.forwarder.route(ctx), this.forwarder.entitiesFor(ctx, this.forwarder.route(ctx)));
}

/** An endpoint's entries in the OIP v2 repository index: one per served model version. */
function repositoryEntries(r: EndpointRoute | undefined): Array<{ name: string; version: string; state: 'READY' | 'UNAVAILABLE'; reason: string }> {
  if (r === undefined) return [];
  return r.entities.map((e) => {
    const ready = e.traffic.backends.length > 0;
    return { name: r.name, version: e.modelVersion, state: ready ? 'READY' : 'UNAVAILABLE', reason: ready ? '' : `served entity '${e.name}' has no ready replica` };
  });
}

function readiness(r: EndpointRoute, entities: readonly EntityRoute[]): Reply {
  if (!entities.some((e) => e.traffic.backends.length > 0)) throw noReplica(r.name);
  return { body: { name: r.name, ready: true } };
}
