/**
 * Reading an inference request's body within its limits: the endpoint's own
 * (`ai_gateway.input_limits.max_body_bytes`) when it has one, else the server's. An OpenAI
 * route's body is read once, by its access rule, which needs its `model` before the handler runs.
 */
import type { NameOf } from '../auth/index.js';
import { FerryError, invalidParameter } from '../errors.js';
import { parseJson, readBody, type Context } from '../http/index.js';
import type { GatewayOptions } from './options.js';
import type { EndpointRoute } from './routing.js';

/** An OpenAI request's body and the endpoint its `model` names. */
interface OpenAiRequest { raw: Buffer; model: string }

export class InferenceBodies {
  /** Read once: the access rule needs `model` before the handler runs. */
  private readonly openAiBodies = new WeakMap<Context, Promise<OpenAiRequest>>();

  constructor(private readonly opts: Pick<GatewayOptions, 'maxBodyBytes'>) {}

  /** Reads an inference body within the endpoint's own limit when it has one, else the server's. */
  async read(ctx: Context, r: EndpointRoute): Promise<Buffer> {
    if (r.maxBodyBytes === undefined) return readBody(ctx.req, this.opts.maxBodyBytes);
    try {
      return await readBody(ctx.req, r.maxBodyBytes);
    } catch (err) {
      if (!(err instanceof FerryError) || err.code !== 'PAYLOAD_TOO_LARGE') throw err;
      throw overEndpointLimit(r, r.maxBodyBytes);
    }
  }

  /** The body of an OpenAI route, read by its access rule; over the endpoint's own limit → 413. */
  async openAi(ctx: Context, r: EndpointRoute): Promise<Buffer> {
    const { raw } = await this.openAiRequest(ctx);
    if (r.maxBodyBytes !== undefined && raw.length > r.maxBodyBytes) throw overEndpointLimit(r, r.maxBodyBytes);
    return raw;
  }

  /** The OpenAI request's body and `model`, read within the server's limit on the first call. */
  openAiRequest(ctx: Context): Promise<OpenAiRequest> {
    let p = this.openAiBodies.get(ctx);
    if (p === undefined) {
      p = (async () => {
        const raw = await readBody(ctx.req, this.opts.maxBodyBytes);
        const parsed = parseJson(raw);
        const model = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>).model : undefined;
        if (typeof model !== 'string' || model === '') throw invalidParameter('model', model, 'the name of a serving endpoint');
        return { raw, model };
      })();
      this.openAiBodies.set(ctx, p);
    }
    return p;
  }

  /** The endpoint an OpenAI request names, for its access rule. */
  readonly modelOf: NameOf = async (ctx) => (await this.openAiRequest(ctx)).model;
}

function overEndpointLimit(r: EndpointRoute, maxBodyBytes: number): FerryError {
  return new FerryError('PAYLOAD_TOO_LARGE', `Request body exceeds the limit of ${maxBodyBytes} bytes of serving endpoint '${r.name}' (ai_gateway.input_limits.max_body_bytes).`);
}
