/**
 * Authorization: every server route carries an access rule (its route metadata), and two
 * middlewares enforce it: `authenticate` turns the bearer token into an identity, `authorize`
 * checks the identity against the rule. A route without a rule is admin-only (deny by default),
 * and test/security-matrix.test.ts walks the whole route table against every role.
 *
 * Levels (Databricks'): serving endpoints CAN_VIEW < CAN_QUERY < CAN_MANAGE; registered models
 * and MLflow experiments CAN_READ < CAN_EDIT < CAN_MANAGE. Admins hold every level on every object. A grant names a
 * principal, or the group `users` (every authenticated principal).
 */
import { FerryError } from '../errors.js';
import type { Context, Handler, Middleware, Reply, Router } from '../http/index.js';
import type { Grant, MetadataStore, ObjectType } from '../store/index.js';
import { bearerToken, hashToken } from './tokens.js';

export type EndpointLevel = 'CAN_VIEW' | 'CAN_QUERY' | 'CAN_MANAGE';
export type ModelLevel = 'CAN_READ' | 'CAN_EDIT' | 'CAN_MANAGE';
export type Level = EndpointLevel | ModelLevel;

/** The levels of each object type, lowest first. */
export const OBJECT_LEVELS: Readonly<Record<ObjectType, readonly Level[]>> = {
  'serving-endpoint': ['CAN_VIEW', 'CAN_QUERY', 'CAN_MANAGE'],
  'registered-model': ['CAN_READ', 'CAN_EDIT', 'CAN_MANAGE'],
  experiment: ['CAN_READ', 'CAN_EDIT', 'CAN_MANAGE'],
};

/** How messages name each object type. */
export const OBJECT_NOUNS: Readonly<Record<ObjectType, string>> = {
  'serving-endpoint': 'serving endpoint',
  'registered-model': 'registered model',
  experiment: 'experiment',
};

/** The grantee that stands for every authenticated principal. */
export const USERS_GROUP = 'group:users';

/** Where a route's object name comes from (a path parameter, the query, the JSON body). */
export type NameOf = (ctx: Context) => string | Promise<string>;

/** Who may call a route. */
export type Access =
  | { kind: 'public' }
  /** Any authenticated principal (what it sees is then filtered by the handler). */
  | { kind: 'user' }
  | { kind: 'admin' }
  | { kind: 'serving-endpoint'; level: EndpointLevel; name: NameOf }
  | { kind: 'registered-model'; level: ModelLevel; name: NameOf }
  /** An MLflow experiment, named by its id (a run's route names the run's experiment). */
  | { kind: 'experiment'; level: ModelLevel; name: NameOf };

/** The server's router: HTTP handlers with access rules. */
export type ServerRouter = Router<Handler, Access>;

const byParam = (param: string): NameOf => (ctx) => ctx.params[param] ?? '';

/** Access rule constructors, for route tables. */
export const access = {
  public: { kind: 'public' } as Access,
  user: { kind: 'user' } as Access,
  admin: { kind: 'admin' } as Access,
  endpoint: (level: EndpointLevel, name: NameOf = byParam('name')): Access => ({ kind: 'serving-endpoint', level, name }),
  model: (level: ModelLevel, name: NameOf): Access => ({ kind: 'registered-model', level, name }),
  experiment: (level: ModelLevel, id: NameOf): Access => ({ kind: 'experiment', level, name: id }),
};

/** Whether a call with this rule is a data-plane call (inference), which the audit log skips. */
export function isDataPlane(a: Access | undefined): boolean {
  return a?.kind === 'serving-endpoint' && a.level === 'CAN_QUERY';
}

export interface Identity {
  principal: string;
  admin: boolean;
}

/** The caller of an authenticated request. */
export function identityOf(ctx: Context): Identity {
  return { principal: ctx.principal ?? '', admin: ctx.admin === true };
}

/**
 * Token and grant lookups with a short cache: the data path checks a token and a grant on every
 * request, and hashing plus two database round trips each time was a tenth of the gateway's CPU
 * for a small model. Every change made through this server's API clears the caches at once
 * (`authorize` calls `changed`), so a revocation takes effect on the next request; `CACHE_TTL_MS`
 * only bounds how long a change made by another process (none in local mode) takes.
 */
const CACHE_TTL_MS = 1000;
const CACHE_MAX_ENTRIES = 10_000;

interface TokenEntry {
  identity: Identity | undefined;
  expiresMs: number | undefined;
  atMs: number;
}

export class Authorizer {
  private readonly tokens = new Map<string, TokenEntry>();
  private readonly grants = new Map<string, { grants: Grant[]; atMs: number }>();

  constructor(readonly store: MetadataStore, private readonly now: () => number = Date.now) {}

  /** The identity a bearer token stands for; undefined for unknown, expired or orphaned tokens. */
  identify(token: string): Identity | undefined | Promise<Identity | undefined> {
    const t = this.now();
    const e = this.tokens.get(token);
    // A cache hit answers synchronously: the data path then costs no promise here.
    if (e !== undefined && t - e.atMs < CACHE_TTL_MS) return e.expiresMs !== undefined && e.expiresMs <= t ? undefined : e.identity;
    return this.lookup(token, t);
  }

  private async lookup(token: string, t: number): Promise<Identity | undefined> {
    const record = await this.store.findTokenByHash(hashToken(token));
    const principal = record === undefined ? undefined : await this.store.getPrincipal(record.principal);
    const e: TokenEntry = { identity: principal && { principal: principal.name, admin: principal.admin }, expiresMs: record?.expiresMs, atMs: t };
    if (this.tokens.size >= CACHE_MAX_ENTRIES) this.tokens.clear();
    this.tokens.set(token, e);
    return e.expiresMs !== undefined && e.expiresMs <= t ? undefined : e.identity;
  }

  /** The caller's level on an object as an index into OBJECT_LEVELS[type] (-1: none). */
  async levelOf(who: Identity, type: ObjectType, name: string): Promise<number> {
    const levels = OBJECT_LEVELS[type];
    if (who.admin) return levels.length - 1;
    let best = -1;
    for (const g of await this.grantsOn(type, name)) {
      if (g.grantee === who.principal || g.grantee === USERS_GROUP) best = Math.max(best, levels.indexOf(g.level as Level));
    }
    return best;
  }

  /**
   * Throws 403 unless the caller holds `level` (or more) on the object. The answer is the same
   * whether the object exists or not, so it reveals nothing about objects the caller cannot see.
   */
  async require(who: Identity, type: ObjectType, name: string, level: Level): Promise<void> {
    if (who.admin) return;
    if (await this.levelOf(who, type, name) >= OBJECT_LEVELS[type].indexOf(level)) return;
    throw new FerryError('PERMISSION_DENIED', `Principal '${who.principal}' does not have ${level} on ${OBJECT_NOUNS[type]} '${name}'.`);
  }

  /** A filter for lists: which objects of `type` the caller may see (the lowest level). */
  async visible(who: Identity, type: ObjectType): Promise<(name: string) => boolean> {
    if (who.admin) return () => true;
    const names = await this.store.grantsOf(type, [who.principal, USERS_GROUP]);
    return (name) => names.has(name);
  }

  private async grantsOn(type: ObjectType, name: string): Promise<Grant[]> {
    const key = `${type}\0${name}`;
    const t = this.now();
    const hit = this.grants.get(key);
    if (hit && t - hit.atMs < CACHE_TTL_MS) return hit.grants;
    const grants = await this.store.getGrants(type, name);
    if (this.grants.size >= CACHE_MAX_ENTRIES) this.grants.clear();
    this.grants.set(key, { grants, atMs: t });
    return grants;
  }

  /** Forgets cached tokens and grants: call after any change to tokens, principals or grants. */
  changed(): void {
    this.tokens.clear();
    this.grants.clear();
    for (const fn of this.changeListeners) fn();
  }

  private readonly changeListeners: Array<() => void> = [];

  /** Runs `fn` after every `changed` (a server's gateway workers then drop their caches too). */
  onChange(fn: () => void): void {
    this.changeListeners.push(fn);
  }
}

/**
 * Requires a valid, unexpired token on every route but public ones, and sets `ctx.principal`
 * and `ctx.admin`. Missing and wrong tokens are both 401; the message says which, never what the
 * token was.
 */
export function authenticate(authz: Authorizer): Middleware<Access> {
  return (next, rule) => {
    if (rule?.kind === 'public') return next;
    const admit = (ctx: Context, who: Identity | undefined): ReturnType<Handler> => {
      if (who === undefined) throw new FerryError('UNAUTHENTICATED', 'Invalid or expired token.');
      ctx.principal = who.principal;
      ctx.admin = who.admin;
      return next(ctx);
    };
    // Synchronous on a token-cache hit (every request but the first of a token each second).
    return (ctx) => {
      const token = bearerToken(ctx.req.headers.authorization);
      if (token === undefined) throw new FerryError('UNAUTHENTICATED', 'Missing credentials: send an "Authorization: Bearer <token>" header.');
      const who = authz.identify(token);
      return who instanceof Promise ? who.then((w) => admit(ctx, w)) : admit(ctx, who);
    };
  };
}

/**
 * Enforces each route's access rule (after `authenticate`). A route without a rule is admin-only.
 * After any control-plane change (a call that is not a read or an inference) the caches are
 * dropped, so a revoked token, a changed grant or a deleted object counts from the next request.
 */
export function authorize(authz: Authorizer): Middleware<Access> {
  return (next, rule, route) => {
    const checked = check(authz, next, rule ?? access.admin);
    if (route.method === 'GET' || route.method === 'HEAD' || isDataPlane(rule)) return checked;
    return async (ctx) => {
      try {
        return await checked(ctx);
      } finally {
        authz.changed();
      }
    };
  };
}

function check(authz: Authorizer, next: Handler, r: Access): Handler {
  switch (r.kind) {
    case 'public':
    case 'user':
      return next;
    case 'admin':
      return (ctx) => {
        if (ctx.admin !== true) throw new FerryError('PERMISSION_DENIED', `Only admins may call this API; '${ctx.principal ?? ''}' is not an admin.`);
        return next(ctx);
      };
    default: {
      const checked = async (ctx: Context): Promise<Reply | undefined> => {
        await authz.require(identityOf(ctx), r.kind, await r.name(ctx), r.level);
        return next(ctx);
      };
      // Admins pass without a promise of this step's own (the data path's common case).
      return (ctx) => (ctx.admin === true ? next(ctx) : checked(ctx));
    }
  }
}
