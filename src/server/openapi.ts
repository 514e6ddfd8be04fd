/**
 * Ferry's whole REST API as an OpenAPI 3.1 document, from the server's route table: every route
 * with its path parameters, who may call it (`x-ferry-access`, and no `security` for public
 * routes) and the error shape of its API family. Request and response bodies are described in
 * docs/api.md; an endpoint's own query schema comes from `GET /api/2.0/serving-endpoints/{name}/openapi`.
 * `docs/openapi.json` is this document for the current code (`node dist/scripts/gen-openapi.js`;
 * a test keeps it in step with the routes).
 */
import type { Access } from '../auth/index.js';

/** Who may call a route, in words. */
function accessText(a: Access | undefined): string {
  switch (a?.kind) {
    case 'public': return 'public';
    case 'user': return 'any authenticated principal';
    case 'serving-endpoint': return `${a.level} on the serving endpoint`;
    case 'registered-model': return `${a.level} on the registered model`;
    case 'experiment': return `${a.level} on the experiment`;
    default: return 'admin';
  }
}

const SCHEMAS = {
  FerryError: { type: 'object', properties: { error_code: { type: 'string' }, message: { type: 'string' } }, required: ['error_code', 'message'] },
  OpenAiError: {
    type: 'object', required: ['error'],
    properties: { error: { type: 'object', properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: 'string' } } } },
  },
  V2Error: { type: 'object', properties: { error: { type: 'string' } }, required: ['error'] },
};

function errorSchema(path: string): string {
  if (path.startsWith('/v1/')) return 'OpenAiError';
  return path === '/v2' || path.startsWith('/v2/') ? 'V2Error' : 'FerryError';
}

/** The OpenAPI document of `routes` (the server router's `list()`), Ferry `version`. */
export function apiDocument(routes: ReadonlyArray<{ method: string; pattern: string; meta: Access | undefined }>, version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of [...routes].sort((a, b) => a.pattern.localeCompare(b.pattern) || a.method.localeCompare(b.method))) {
    const params = [...r.pattern.matchAll(/[:*](\w+)/g)].map((m) => m[1] as string);
    const path = r.pattern.replace(/[:*](\w+)/g, '{$1}');
    const operation: Record<string, unknown> = {
      operationId: `${r.method.toLowerCase()} ${path}`,
      'x-ferry-access': accessText(r.meta),
      parameters: params.map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
      responses: {
        200: { description: 'success' },
        default: { description: 'error', content: { 'application/json': { schema: { $ref: `#/components/schemas/${errorSchema(path)}` } } } },
      },
    };
    if (r.meta?.kind === 'public') operation.security = [];
    (paths[path] ??= {})[r.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Ferry REST API', version, description: 'Every route of `ferry server`. Bodies: docs/api.md; errors: one shape per API family.' },
    components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } }, schemas: SCHEMAS },
    security: [{ bearerAuth: [] }],
    paths,
  };
}
