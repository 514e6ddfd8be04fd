/**
 * Identity and permission APIs:
 * - `GET /api/2.0/me`: who the token belongs to.
 * - `/api/2.0/principals`: users and service principals (admins).
 * - `/api/2.0/token/{create,list,delete}`: the caller's own tokens (Databricks' token API).
 * - `/api/2.0/token-management/...`: any principal's tokens (admins; Databricks' token management).
 * - `/api/2.0/permissions/{serving-endpoints,registered-models,experiments}/{id}`: GET, PUT (replace the
 *   grants), PATCH (add or change grants), in Databricks' access-control-list shape; needs
 *   CAN_MANAGE on the object.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type {
  CreatePrincipalRequest, CreateTokenOnBehalfRequest, CreateTokenRequest, CreateTokenResponse, ListPrincipalsResponse,
  ListTokensResponse, MyPermissionResponse, ObjectPermissions, PermissionLevelsResponse, Principal, RevokeTokenRequest, SetPermissionsRequest, TokenInfo,
  UpdatePrincipalRequest,
} from '../api/index.js';
import { configError, type SchemasFit } from '../config/index.js';
import { FerryError, invalidParameter, notFound } from '../errors.js';
import { readJsonObject, type Context, type JsonLimits } from '../http/index.js';
import type { Grant, ObjectType, PrincipalRecord, TokenRecord } from '../store/index.js';
import { access, identityOf, OBJECT_LEVELS, USERS_GROUP, type Access, type Authorizer, type Level, type NameOf, type ServerRouter } from './access.js';
import { ADMIN_PRINCIPAL, generateToken, hashToken } from './tokens.js';

export interface AuthApiOptions {
  maxBodyBytes: number;
  jsonLimits: JsonLimits;
  now: () => number;
  /**
   * Removes what a deleted principal owned outside the store (its upload area in the artifact
   * store), so that a principal created later under the same name starts with nothing.
   */
  deleteOwned: (principal: string) => Promise<void>;
}

/** Principal names: what a user name or an application name looks like; no ':' (groups use it). */
const PRINCIPAL_NAME = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/;
const DAY_S = 86_400;
/** Tokens expire after 90 days unless asked otherwise; at most after two years. */
const DEFAULT_TOKEN_LIFETIME_S = 90 * DAY_S;
const MAX_TOKEN_LIFETIME_S = 730 * DAY_S;

const principalName = z.string().regex(PRINCIPAL_NAME, 'expected 1-128 letters, digits or . _ @ + - (starting with a letter or digit)');
const tokenSpec = {
  lifetime_seconds: z.number().int().min(60).max(MAX_TOKEN_LIFETIME_S).optional(),
  comment: z.string().max(1000).default(''),
};
const schemas = {
  principal: z.strictObject({ name: principalName, type: z.enum(['USER', 'SERVICE_PRINCIPAL']).default('USER'), admin: z.boolean().default(false) }),
  principalPatch: z.strictObject({ admin: z.boolean() }),
  token: z.strictObject(tokenSpec),
  onBehalfToken: z.strictObject({ principal: principalName, ...tokenSpec }),
  tokenId: z.strictObject({ token_id: z.string().min(1) }),
  acl: z.strictObject({
    access_control_list: z.array(z.strictObject({
      user_name: z.string().optional(),
      service_principal_name: z.string().optional(),
      group_name: z.string().optional(),
      permission_level: z.string(),
    })),
  }),
};

/** `src/api`'s request bodies and these schemas' inputs agree (checked by tsc when either changes). */
const requestsFit: SchemasFit<{
  principal: CreatePrincipalRequest;
  principalPatch: UpdatePrincipalRequest;
  token: CreateTokenRequest;
  onBehalfToken: CreateTokenOnBehalfRequest;
  tokenId: RevokeTokenRequest;
  acl: SetPermissionsRequest;
}, typeof schemas> = { principal: true, principalPatch: true, token: true, onBehalfToken: true, tokenId: true, acl: true };
void requestsFit;

export function authRoutes(router: ServerRouter, authz: Authorizer, opts: AuthApiOptions): void {
  const store = authz.store;
  const input = async <S extends z.ZodType>(ctx: Context, schema: S): Promise<z.output<S>> => {
    const raw = await readJsonObject(ctx.req, opts.maxBodyBytes, opts.jsonLimits);
    const parsed = schema.safeParse(raw);
    if (!parsed.success) throw configError(parsed.error, raw);
    return parsed.data;
  };
  const requirePrincipal = async (name: string): Promise<PrincipalRecord> => {
    const p = await store.getPrincipal(name);
    if (!p) throw notFound(`Principal '${name}'`);
    return p;
  };
  const issue = async (principal: string, spec: { lifetime_seconds?: number | undefined; comment: string }): Promise<CreateTokenResponse> => {
    const token = generateToken();
    const nowMs = opts.now();
    const record: TokenRecord = {
      id: randomBytes(8).toString('hex'), principal, hash: hashToken(token), createdMs: nowMs,
      expiresMs: nowMs + (spec.lifetime_seconds ?? DEFAULT_TOKEN_LIFETIME_S) * 1000, description: spec.comment,
    };
    await store.putToken(record);
    return { token_value: token, token_info: tokenJson(record) };
  };

  router
    .add('GET', '/api/2.0/me', async (ctx) => ({ body: principalJson(await requirePrincipal(ctx.principal ?? '')) }), access.user)
    .add('POST', '/api/2.0/principals', async (ctx) => {
      const b = await input(ctx, schemas.principal);
      const p: PrincipalRecord = { name: b.name, kind: b.type === 'USER' ? 'user' : 'service_principal', admin: b.admin, createdMs: opts.now(), createdBy: ctx.principal ?? '' };
      await store.createPrincipal(p);
      return { body: principalJson(p) };
    }, access.admin)
    .add('GET', '/api/2.0/principals', async () => ({ body: { principals: (await store.listPrincipals()).map(principalJson) } satisfies ListPrincipalsResponse }), access.admin)
    .add('GET', '/api/2.0/principals/:name', async (ctx) => ({ body: principalJson(await requirePrincipal(ctx.params.name ?? '')) }), access.admin)
    .add('PATCH', '/api/2.0/principals/:name', async (ctx) => {
      const name = ctx.params.name ?? '';
      const b = await input(ctx, schemas.principalPatch);
      if (name === ADMIN_PRINCIPAL && !b.admin) throw new FerryError('INVALID_PARAMETER_VALUE', `The bootstrap principal '${ADMIN_PRINCIPAL}' is always an admin.`);
      return { body: principalJson(await store.setPrincipalAdmin(name, b.admin)) };
    }, access.admin)
    .add('DELETE', '/api/2.0/principals/:name', async (ctx) => {
      const name = ctx.params.name ?? '';
      if (name === ADMIN_PRINCIPAL) throw new FerryError('INVALID_PARAMETER_VALUE', `The bootstrap principal '${ADMIN_PRINCIPAL}' cannot be deleted.`);
      await requirePrincipal(name);
      // Its files first: a failure leaves the principal in place, to be deleted again.
      await opts.deleteOwned(name);
      if (!(await store.deletePrincipal(name))) throw notFound(`Principal '${name}'`);
      return { body: {} };
    }, access.admin)

    .add('POST', '/api/2.0/token/create', async (ctx) => ({ body: await issue(ctx.principal ?? '', await input(ctx, schemas.token)) }), access.user)
    .add('GET', '/api/2.0/token/list', async (ctx) => ({ body: { token_infos: (await store.listTokens(ctx.principal ?? '')).map(tokenJson) } satisfies ListTokensResponse }), access.user)
    .add('POST', '/api/2.0/token/delete', async (ctx) => {
      const { token_id: id } = await input(ctx, schemas.tokenId);
      // Another principal's token id answers like an unknown one.
      const own = (await store.listTokens(ctx.principal ?? '')).some((t) => t.id === id);
      if (!own || !(await store.deleteToken(id))) throw notFound(`Token '${id}'`);
      return { body: {} };
    }, access.user)
    .add('POST', '/api/2.0/token-management/on-behalf-of/tokens', async (ctx) => {
      const b = await input(ctx, schemas.onBehalfToken);
      await requirePrincipal(b.principal);
      return { body: await issue(b.principal, b) };
    }, access.admin)
    .add('GET', '/api/2.0/token-management/tokens', async (ctx) => {
      const principal = ctx.query.get('principal') ?? undefined;
      return { body: { token_infos: (await store.listTokens(principal)).map(tokenJson) } satisfies ListTokensResponse };
    }, access.admin)
    .add('DELETE', '/api/2.0/token-management/tokens/:id', async (ctx) => {
      const id = ctx.params.id ?? '';
      if (!(await store.deleteToken(id))) throw notFound(`Token '${id}'`);
      return { body: {} };
    }, access.admin);

  permissionRoutes(router, authz, 'serving-endpoint', 'serving-endpoints', async (ctx) => {
    // Databricks addresses endpoints by id here; names work too. An id stands for its endpoint's
    // name only for a caller who may see that endpoint: anyone else is refused (403) naming the
    // id they sent, never the name behind it.
    const id = ctx.params.id ?? '';
    const endpoint = (await store.listEndpoints()).find((e) => e.id === id);
    if (endpoint === undefined) return id;
    return (await authz.levelOf(identityOf(ctx), 'serving-endpoint', endpoint.name)) >= 0 ? endpoint.name : id;
  }, input);
  permissionRoutes(router, authz, 'registered-model', 'registered-models', (ctx) => ctx.params.id ?? '', input);
  permissionRoutes(router, authz, 'experiment', 'experiments', (ctx) => ctx.params.id ?? '', input);
}

function permissionRoutes(
  router: ServerRouter, authz: Authorizer, type: ObjectType, plural: string, nameOf: NameOf,
  input: <S extends z.ZodType>(ctx: Context, schema: S) => Promise<z.output<S>>,
): void {
  const store = authz.store;
  const ruleOf = (level: Level): Access => {
    if (type === 'serving-endpoint') return access.endpoint(level === 'CAN_MANAGE' ? level : 'CAN_VIEW', nameOf);
    return type === 'experiment' ? access.experiment(level === 'CAN_MANAGE' ? level : 'CAN_READ', nameOf) : access.model(level === 'CAN_MANAGE' ? level : 'CAN_READ', nameOf);
  };
  const rule = ruleOf('CAN_MANAGE');
  const objectId = async (name: string): Promise<string> => {
    if (type === 'registered-model') {
      if (!(await store.getRegisteredModel(name))) throw notFound(`Registered model '${name}'`);
      return name;
    }
    if (type === 'experiment') {
      if (!(await store.tracking.getExperiment(name))) throw notFound(`Experiment with id '${name}'`);
      return name;
    }
    const e = await store.getEndpoint(name);
    if (!e) throw notFound(`Serving endpoint '${name}'`);
    return e.id;
  };
  const describe = async (name: string): Promise<ObjectPermissions> => {
    const id = await objectId(name);
    const principals = new Map((await store.listPrincipals()).map((p) => [p.name, p]));
    return {
      object_id: `/${plural}/${id}`,
      object_type: type,
      access_control_list: [
        ...(await store.getGrants(type, name)).map((g) => ({ ...granteeJson(g.grantee, principals), all_permissions: [{ permission_level: g.level, inherited: false }] })),
        { group_name: 'admins', all_permissions: [{ permission_level: 'CAN_MANAGE', inherited: true, inherited_from_object: ['/'] }] },
      ],
    };
  };
  /** The grants of an access control list, checked against the principals that exist. */
  const grantsOf = async (b: z.output<typeof schemas.acl>): Promise<Grant[]> => {
    const levels = OBJECT_LEVELS[type];
    const out: Grant[] = [];
    for (const [i, entry] of b.access_control_list.entries()) {
      const field = `access_control_list[${i}]`;
      if (!levels.includes(entry.permission_level as never)) throw invalidParameter(`${field}.permission_level`, entry.permission_level, `one of ${levels.join(', ')}`);
      const names = [entry.user_name, entry.service_principal_name, entry.group_name].filter((n) => n !== undefined);
      if (names.length !== 1) throw invalidParameter(field, entry, 'exactly one of user_name, service_principal_name, group_name');
      let grantee: string;
      if (entry.group_name !== undefined) {
        if (entry.group_name !== 'users') throw invalidParameter(`${field}.group_name`, entry.group_name, '"users" (every authenticated principal; admins hold every permission already)');
        grantee = USERS_GROUP;
      } else {
        const kind = entry.user_name !== undefined ? 'user' : 'service_principal';
        const name = (entry.user_name ?? entry.service_principal_name) as string;
        const p = await store.getPrincipal(name);
        if (!p || p.kind !== kind) throw invalidParameter(`${field}.${kind === 'user' ? 'user_name' : 'service_principal_name'}`, name, `an existing ${kind === 'user' ? 'user' : 'service principal'}`);
        grantee = name;
      }
      out.push({ grantee, level: entry.permission_level });
    }
    return out;
  };
  const base = `/api/2.0/permissions/${plural}/:id`;
  router
    .add('GET', base, async (ctx) => ({ body: await describe(await nameOf(ctx)) }), rule)
    .add('PUT', base, async (ctx) => {
      const name = await nameOf(ctx);
      await objectId(name);
      const grants = await grantsOf(await input(ctx, schemas.acl));
      await store.setGrants(type, name, grants);
      return { body: await describe(name) };
    }, rule)
    .add('PATCH', base, async (ctx) => {
      const name = await nameOf(ctx);
      await objectId(name);
      const added = await grantsOf(await input(ctx, schemas.acl));
      const merged = new Map((await store.getGrants(type, name)).map((g) => [g.grantee, g]));
      for (const g of added) merged.set(g.grantee, g);
      await store.setGrants(type, name, [...merged.values()]);
      return { body: await describe(name) };
    }, rule);
  const viewRule = ruleOf('CAN_READ');
  // The caller's own level, for clients deciding what to show (needs only to see the object).
  router.add('GET', `${base}/me`, async (ctx) => {
    const name = await nameOf(ctx);
    const level = await authz.levelOf(identityOf(ctx), type, name);
    return { body: { permission_level: OBJECT_LEVELS[type][level] ?? null } satisfies MyPermissionResponse };
  }, viewRule);
  // The levels one can grant on the object (Databricks `get_permission_levels`), lowest first.
  router.add('GET', `${base}/permissionLevels`, async (ctx) => {
    await objectId(await nameOf(ctx));
    return { body: { permission_levels: OBJECT_LEVELS[type].map((level) => ({ permission_level: level, description: LEVEL_DESCRIPTIONS[level] })) } satisfies PermissionLevelsResponse };
  }, viewRule);
}

/** What each level allows, as `permissionLevels` describes it. */
const LEVEL_DESCRIPTIONS: Readonly<Record<Level, string>> = {
  CAN_VIEW: 'Can see the serving endpoint, its configuration, state and metrics.',
  CAN_QUERY: 'Can view the serving endpoint and send it inference requests.',
  CAN_MANAGE: 'Can query, update, delete and set permissions on the object.',
  CAN_READ: 'Can see the registered model, its versions, and serve them.',
  CAN_EDIT: 'Can read the registered model and add versions, tags and aliases.',
};

function granteeJson(grantee: string, principals: Map<string, PrincipalRecord>): Omit<ObjectPermissions['access_control_list'][number], 'all_permissions'> {
  if (grantee.startsWith('group:')) return { group_name: grantee.slice('group:'.length) };
  return principals.get(grantee)?.kind === 'service_principal' ? { service_principal_name: grantee } : { user_name: grantee };
}

function principalJson(p: PrincipalRecord): Principal {
  return { name: p.name, type: p.kind === 'user' ? 'USER' : 'SERVICE_PRINCIPAL', admin: p.admin, creation_time: p.createdMs, created_by: p.createdBy };
}

function tokenJson(t: TokenRecord): TokenInfo {
  return { token_id: t.id, owner: t.principal, creation_time: t.createdMs, expiry_time: t.expiresMs ?? -1, comment: t.description };
}
