/**
 * The serving-endpoints REST API, in Databricks' shapes under `/api/2.0/serving-endpoints`.
 * Writes are durable before the answer; the answer shows the endpoint with its pending config.
 *
 * Access: any principal may create an endpoint (and then holds CAN_MANAGE on it) for models it
 * can read, and list the endpoints it can view; reading needs CAN_VIEW, changing and deleting
 * CAN_MANAGE, and a config may only serve models the caller can read.
 */
import { access, identityOf, type Authorizer, type ServerRouter } from '../auth/index.js';
import { readJsonObject, type Context, type JsonLimits } from '../http/index.js';
import type { EndpointController, ModelCheck } from './controller.js';

export function endpointRoutes(router: ServerRouter, controller: EndpointController, authz: Authorizer, opts: { maxBodyBytes: number; jsonLimits: JsonLimits }): void {
  const base = '/api/2.0/serving-endpoints';
  const body = (ctx: Context): Promise<Record<string, unknown>> => readJsonObject(ctx.req, opts.maxBodyBytes, opts.jsonLimits);
  const name = (ctx: Context): string => ctx.params.name ?? '';
  const mayServe = (ctx: Context): ModelCheck => async (models) => {
    for (const m of models) await authz.require(identityOf(ctx), 'registered-model', m, 'CAN_READ');
  };
  const manage = access.endpoint('CAN_MANAGE');
  router
    .add('POST', base, async (ctx) => {
      const record = await controller.create(await body(ctx), ctx.principal ?? 'unknown', mayServe(ctx));
      return { body: controller.describe(record.name) };
    }, access.user)
    .add('GET', base, async (ctx) => {
      const canView = await authz.visible(identityOf(ctx), 'serving-endpoint');
      return { body: { endpoints: controller.list().filter((e) => canView(e.name)) } };
    }, access.user)
    .add('GET', `${base}/:name`, async (ctx) => ({ body: controller.describe(name(ctx), await controller.familyViews(name(ctx))) }), access.endpoint('CAN_VIEW'))
    .add('PUT', `${base}/:name/config`, async (ctx) => {
      await controller.updateConfig(name(ctx), await body(ctx), mayServe(ctx));
      return { body: controller.describe(name(ctx)) };
    }, manage)
    // Ferry extension: stop the update in progress (409 when there is none).
    .add('POST', `${base}/:name/config/cancel`, async (ctx) => {
      await controller.cancelUpdate(name(ctx));
      return { body: controller.describe(name(ctx)) };
    }, manage)
    .add('PUT', `${base}/:name/ai-gateway`, async (ctx) => {
      return { body: await controller.setAiGateway(name(ctx), await body(ctx)) };
    }, manage)
    .add('DELETE', `${base}/:name`, async (ctx) => {
      await controller.delete(name(ctx));
      return { body: {} };
    }, manage)
    .add('GET', `${base}/:name/openapi`, async (ctx) => ({ body: await controller.openApi(name(ctx)) }), access.endpoint('CAN_VIEW'))
    .add('PATCH', `${base}/:name/tags`, async (ctx) => ({ body: await controller.patchTags(name(ctx), await body(ctx)) }), manage)
    // Replica logs can hold request data from model errors: managers only.
    .add('GET', `${base}/:name/served-models/:served/logs`, async (ctx) => ({ body: { logs: await controller.logs(name(ctx), ctx.params.served ?? '') } }), manage)
    .add('GET', `${base}/:name/served-models/:served/build-logs`, async (ctx) => ({ body: { logs: await controller.buildLogs(name(ctx), ctx.params.served ?? '') } }), manage);
}
