/**
 * The serving-endpoints REST API, in Databricks' shapes under `/api/2.0/serving-endpoints`.
 * Writes are durable before the answer; the answer shows the endpoint with its pending config.
 */
import { readJsonObject, type Context, type JsonLimits, type Router } from '../http/index.js';
import type { EndpointController } from './controller.js';

export function endpointRoutes(router: Router, controller: EndpointController, opts: { maxBodyBytes: number; jsonLimits: JsonLimits }): void {
  const base = '/api/2.0/serving-endpoints';
  const body = (ctx: Context): Promise<Record<string, unknown>> => readJsonObject(ctx.req, opts.maxBodyBytes, opts.jsonLimits);
  const name = (ctx: Context): string => ctx.params.name ?? '';
  router
    .add('POST', base, async (ctx) => {
      const record = await controller.create(await body(ctx), ctx.principal ?? 'unknown');
      return { body: controller.describe(record.name) };
    })
    .add('GET', base, () => ({ body: { endpoints: controller.list() } }))
    .add('GET', `${base}/:name`, (ctx) => ({ body: controller.describe(name(ctx)) }))
    .add('PUT', `${base}/:name/config`, async (ctx) => {
      await controller.updateConfig(name(ctx), await body(ctx));
      return { body: controller.describe(name(ctx)) };
    })
    // Ferry extension: stop the update in progress (409 when there is none).
    .add('POST', `${base}/:name/config/cancel`, async (ctx) => {
      await controller.cancelUpdate(name(ctx));
      return { body: controller.describe(name(ctx)) };
    })
    .add('PUT', `${base}/:name/ai-gateway`, async (ctx) => {
      const a = await controller.setAiGateway(name(ctx), await body(ctx));
      return { body: { fallback_config: { enabled: a.fallbackEnabled } } };
    })
    .add('DELETE', `${base}/:name`, async (ctx) => {
      await controller.delete(name(ctx));
      return { body: {} };
    })
    .add('GET', `${base}/:name/served-models/:served/logs`, async (ctx) => ({ body: { logs: await controller.logs(name(ctx), ctx.params.served ?? '') } }));
}
