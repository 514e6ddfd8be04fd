/**
 * Forwarding to a model family's endpoint: the member a request names (the `X-Ferry-Model`
 * header, else the OIP v2 version segment), the caller's right to read it, the replica path that
 * carries it and the model's affinity hash for routing.
 */
import { identityOf } from '../auth/index.js';
import { FerryError, invalidParameter } from '../errors.js';
import type { Context } from '../http/index.js';
import type { ChannelRequest, RequestMeta } from '../channel/index.js';
import { MODEL_HEADER, type FamilyMember } from '../multi/index.js';
import type { GatewayOptions } from './options.js';
import { modelAffinity, type EndpointRoute, type EntityRoute } from './routing.js';

/** What a family request asks its replica for: a model call in either protocol, or the model's metadata. */
export type FamilyRoute = 'invocations' | 'infer' | 'metadata';

/** The model a family request names, and the field that named it (for error messages). */
export interface FamilyModel { raw: string; field: string }

/** Family endpoints have family entities only (config validation), so the first one tells. */
export function isFamily(r: EndpointRoute): boolean {
  return r.entities[0]?.family !== undefined;
}

/** Request metadata of a request without trace context (a family request still carries its member). */
const NO_TRACE: RequestMeta = { requestId: undefined, traceparent: undefined, tracestate: undefined, wantSpan: false };

/**
 * The model a request to a family endpoint names: the `X-Ferry-Model` header, else (OIP v2) the
 * version segment of the path. 400 when neither is there, or on a route families do not serve.
 */
export function familyModelOf(ctx: Context, r: EndpointRoute, familyRoute: FamilyRoute | undefined): FamilyModel {
  if (familyRoute === undefined) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `Serving endpoint '${r.name}' serves a model family: call /serving-endpoints/${r.name}/invocations or the OIP v2 routes with an X-Ferry-Model header.`);
  }
  const header = ctx.req.headers[MODEL_HEADER];
  if (typeof header === 'string' && header !== '') return { raw: header, field: 'X-Ferry-Model' };
  const version = ctx.params.version;
  if (version !== undefined) return { raw: version, field: 'versions/{model} path segment' };
  throw invalidParameter('X-Ferry-Model', undefined, `a header naming the model (name, name/<version> or name@<alias>): serving endpoint '${r.name}' serves a model family`);
}

export class FamilyTargets {
  constructor(private readonly opts: Pick<GatewayOptions, 'authz'>) {}

  /**
   * Where a family request goes on `entity`: the READY version it names (404 when there is none
   * in the family), which the caller must be able to read (403), the replica path that carries
   * it, and the model's affinity hash for routing.
   */
  async target(
    ctx: Context, entity: EntityRoute, model: FamilyModel, familyRoute: FamilyRoute, req: ChannelRequest, binarySuffix: string,
  ): Promise<{ member: FamilyMember; req: ChannelRequest; affinity: number }> {
    const member = await (entity.family as NonNullable<EntityRoute['family']>).resolve(model.raw, model.field);
    await this.opts.authz.require(identityOf(ctx), 'registered-model', member.name, 'CAN_READ');
    const path = `/family/${member.name}/${member.version}${familyRoute === 'metadata' ? '' : `/${familyRoute}`}${binarySuffix}`;
    // Where the member's artifact is: a replica that fetches members itself (a pod) needs it on a miss.
    const meta: RequestMeta = { ...(req.meta ?? NO_TRACE), member: member.artifactMeta };
    return { member, req: { ...req, path, meta }, affinity: modelAffinity(`${member.name}/${member.version}`) };
  }
}
