/**
 * Bearer tokens. A token is `ferry_` + 256 random bits (base64url); only its sha256 is stored, so
 * a leaked database does not leak tokens, and lookup by hash (an index probe on a digest) means no
 * secret is ever compared byte by byte, so there is no timing signal to compare against. The admin
 * principal and its token are bootstrapped on first start.
 */
import { createHash, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../errors.js';
import type { MetadataStore } from '../store/index.js';

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
 * Makes sure the `admin` principal exists (and is an admin) and has a token. With `envToken` (FERRY_ADMIN_TOKEN) that is the admin token.
 * Otherwise the first start generates one, stores its hash, writes it to `<dataDir>/admin-token`
 * (0600) and returns it so the caller prints it once; later starts return undefined.
 */
export async function bootstrapAdminToken(store: MetadataStore, dataDir: string, envToken: string | undefined, nowMs: number): Promise<string | undefined> {
  const id = 'admin-bootstrap';
  const admin = await store.getPrincipal(ADMIN_PRINCIPAL);
  if (admin === undefined) await store.createPrincipal({ name: ADMIN_PRINCIPAL, kind: 'user', admin: true, createdMs: nowMs, createdBy: '' });
  else if (!admin.admin) await store.setPrincipalAdmin(ADMIN_PRINCIPAL, true);
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
