/**
 * Authentication: bearer tokens. A token is `ferry_` + 256 random bits (base64url); only its
 * sha256 is stored, so a leaked database does not leak tokens, and lookup by hash means no
 * secret is ever compared byte by byte. The admin token is bootstrapped on first start.
 */
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../errors.js';
import type { Middleware } from '../http/index.js';
import type { MetadataStore, TokenRecord } from '../store/index.js';

export const TOKEN_PREFIX = 'ferry_';
export const ADMIN_PRINCIPAL = 'admin';
/** File in the data directory holding a generated admin token (mode 0600), read by the CLI. */
export const ADMIN_TOKEN_FILE = 'admin-token';

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Makes sure an admin token exists. With `envToken` (FERRY_ADMIN_TOKEN) that is the admin token.
 * Otherwise the first start generates one, stores its hash, writes it to `<dataDir>/admin-token`
 * (0600) and returns it so the caller prints it once; later starts return undefined.
 */
export async function bootstrapAdminToken(store: MetadataStore, dataDir: string, envToken: string | undefined, nowMs: number): Promise<string | undefined> {
  const id = 'admin-bootstrap';
  if (envToken !== undefined && envToken !== '') {
    if (envToken.length < 16) throw new FerryError('INVALID_PARAMETER_VALUE', 'FERRY_ADMIN_TOKEN must be at least 16 characters long.');
    await store.putToken({ id, principal: ADMIN_PRINCIPAL, hash: hashToken(envToken), createdMs: nowMs, expiresMs: undefined, description: 'admin (FERRY_ADMIN_TOKEN)' });
    return undefined;
  }
  const file = path.join(dataDir, ADMIN_TOKEN_FILE);
  const existing = await fsp.readFile(file, 'utf8').then((t) => t.trim(), () => undefined);
  if (existing !== undefined && (await store.findTokenByHash(hashToken(existing)))?.principal === ADMIN_PRINCIPAL) return undefined;
  const token = generateToken();
  await store.putToken({ id, principal: ADMIN_PRINCIPAL, hash: hashToken(token), createdMs: nowMs, expiresMs: undefined, description: 'admin (generated at first start)' });
  await fsp.writeFile(file, token + '\n', { mode: 0o600 });
  await fsp.chmod(file, 0o600);
  return token;
}

/** Reads the bearer token of a request: `Authorization: Bearer <token>`. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

/**
 * Middleware that requires a valid, unexpired token and sets `ctx.principal`. Missing or wrong
 * tokens are both 401 UNAUTHENTICATED; the message says which, never what the token was.
 */
export function authenticate(store: MetadataStore, now: () => number = Date.now): Middleware {
  const cache = new TokenCache(store, now);
  return (next) => async (ctx) => {
    const token = bearerToken(ctx.req.headers.authorization);
    if (token === undefined) {
      throw new FerryError('UNAUTHENTICATED', 'Missing credentials: send an "Authorization: Bearer <token>" header.');
    }
    const record = await cache.lookup(token);
    if (record === undefined || (record.expiresMs !== undefined && record.expiresMs <= now())) {
      throw new FerryError('UNAUTHENTICATED', 'Invalid or expired token.');
    }
    ctx.principal = record.principal;
    return next(ctx);
  };
}

/**
 * Token lookups cached for `TOKEN_CACHE_TTL_MS`, keyed by the presented token: the data path checks
 * a token on every request, and hashing it plus a database round trip each time was a tenth of
 * the gateway's CPU for a small model. The TTL bounds how long a token deleted in the database by
 * another process keeps working. Unknown tokens are cached too (as misses), within the size bound.
 */
const TOKEN_CACHE_TTL_MS = 1000;
const TOKEN_CACHE_MAX_ENTRIES = 10_000;

class TokenCache {
  private readonly entries = new Map<string, { record: TokenRecord | undefined; atMs: number }>();

  constructor(private readonly store: MetadataStore, private readonly now: () => number) {}

  async lookup(token: string): Promise<TokenRecord | undefined> {
    const t = this.now();
    const hit = this.entries.get(token);
    if (hit && t - hit.atMs < TOKEN_CACHE_TTL_MS) return hit.record;
    const record = await this.store.findTokenByHash(hashToken(token));
    if (this.entries.size >= TOKEN_CACHE_MAX_ENTRIES) this.entries.clear();
    this.entries.set(token, { record, atMs: t });
    return record;
  }
}
