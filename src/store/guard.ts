/**
 * Storage failures as the errors users see: a full disk is a 507 that says so (not an internal
 * error), a corrupt database a 500 that names the database and the recovery steps. Every store
 * method passes through `guardStore`, so no caller has to recognise driver error codes.
 */
import { FerryError } from '../errors.js';

/** Driver and OS error codes that mean "no space left": SQLite's, Node's, Postgres' (SQLSTATE 53100 disk_full). */
const FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT', '53100']);
/** SQLite's codes for a file that is damaged or is not a database. */
const CORRUPT_CODES = new Set(['SQLITE_CORRUPT', 'SQLITE_NOTADB']);

/**
 * `err` as the FerryError a user sees, when it is a storage condition: full → 507
 * INSUFFICIENT_STORAGE, corrupt → 500 INTERNAL_ERROR naming `what` (e.g. "the metadata database
 * ferry.db": a file name, never the server's directories). Anything else is returned unchanged.
 */
export function storageError(err: unknown, what: string): unknown {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return err;
  if (FULL_CODES.has(code)) {
    return new FerryError('INSUFFICIENT_STORAGE', `No space left to write to ${what} (${code}): free disk space on its volume, then retry.`, { cause: err });
  }
  if (CORRUPT_CODES.has(code)) {
    return new FerryError('INTERNAL_ERROR', `Storage failure: ${what} is corrupt (${code}). Stop the server, back the file up and recover it (docs/storage.md, "Integrity checks and recovery").`, { cause: err });
  }
  return err;
}

/**
 * Wraps every method of `store` so that a storage condition surfaces as `storageError` says,
 * thrown synchronously or as a rejection; a `tracking` sub-store (the metadata store's) is
 * wrapped the same way.
 */
export function guardStore<T extends object>(store: T, what: string): T {
  let tracking: object | undefined;
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (prop === 'tracking' && typeof value === 'object' && value !== null) return (tracking ??= guardStore(value, what));
      if (typeof value !== 'function') return value;
      return (...args: unknown[]): unknown => {
        let result: unknown;
        try {
          result = (value as (...a: unknown[]) => unknown).apply(target, args);
        } catch (err) {
          throw storageError(err, what);
        }
        return result instanceof Promise ? result.catch((err: unknown) => { throw storageError(err, what); }) : result;
      };
    },
  });
}
