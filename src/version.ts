/**
 * Ferry's version, from its package.json (read once, when first imported). A leaf module: what
 * reports the version (`GET /v2`, the CLI) imports only this.
 */
import { readFileSync } from 'node:fs';

/** e.g. "0.1.0". From dist/src/version.js, package.json is two folders up. */
export const FERRY_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
