/**
 * The OpenAI-compatible routes' handlers: an inference route whose endpoint is the body's
 * `model`, and the model list and lookup (`GET /v1/models[/{id}]`) of the endpoints the caller may view.
 */
import { identityOf, type NameOf } from '../auth/index.js';
import { notFound } from '../errors.js';
import type { Handler } from '../http/index.js';
import type { InferenceBodies } from './bodies.js';
import type { Forwarder } from './forward.js';
import type { GatewayOptions } from './options.js';
import { rateLimited } from './rate-limit.js';
import type { RoutingTable } from './routing.js';

export class OpenAiRoutes {
  constructor(
    private readonly table: RoutingTable, private readonly opts: Pick<GatewayOptions, 'authz'>,
    private readonly bodies: InferenceBodies, private readonly forwarder: Forwarder,
  ) {}

  /** An OpenAI route: the endpoint is the body's `model`. */
  inference(replicaPath: string): Handler {
    const limited = rateLimited(this.forwarder.forward(() => replicaPath, 'openai'));
    return async (ctx) => {
      const { model } = await this.bodies.openAiRequest(ctx);
      ctx.params.name = model; // for the request event, logs and spans, as on the other routes
      return limited(ctx, this.forwarder.route(ctx));
    };
  }

  /** `GET /v1/models`: the endpoints the caller may view. */
  readonly models: Handler = async (ctx) => {
    const visible = await this.opts.authz.visible(identityOf(ctx), 'serving-endpoint');
    return { body: { object: 'list', data: this.table.names().filter(visible).map(openAiModel) } };
  };

  /** The endpoint `GET /v1/models/{id}` names, for its access rule. */
  readonly modelId: NameOf = (ctx) => ctx.params.id ?? '';

  /** `models.retrieve`: an endpoint the caller may view (its access rule), else 404. */
  readonly model: Handler = (ctx) => {
    const id = this.modelId(ctx) as string;
    if (this.table.get(id) === undefined) throw notFound(`Model '${id}'`);
    return { body: openAiModel(id) };
  };
}

/** An endpoint as an OpenAI model object (`GET /v1/models[/{id}]`). */
function openAiModel(id: string): { id: string; object: 'model'; created: number; owned_by: string } {
  return { id, object: 'model', created: 0, owned_by: 'ferry' };
}
