/**
 * A throwaway PostgreSQL server for tests: initdb in a temp dir, `postgres` listening on a Unix
 * socket only (no port to collide on), fsync off (a test cluster need not survive a power cut).
 * Postgres refuses to run as root, so under root (CI, this machine) it runs as the `postgres`
 * user the Debian package creates.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { tempDir, waitFor } from './index.js';

export interface TestPostgres {
  /** Creates an empty database; resolves with its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/** The newest `/usr/lib/postgresql/<version>/bin` holding initdb and postgres, if any. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  return versions.map((v) => path.join(root, v, 'bin')).find((bin) => fs.existsSync(path.join(bin, 'initdb')) && fs.existsSync(path.join(bin, 'postgres')));
}

/** Why tests needing Postgres cannot run here, or undefined when they can. */
export function postgresUnavailable(): string | undefined {
  if (postgresBinDir() === undefined) return 'no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)';
  if (process.getuid?.() === 0 && postgresUser() === undefined) return 'running as root and there is no `postgres` user to run PostgreSQL as';
  return undefined;
}

/** uid and gid of the `postgres` user, from /etc/passwd. */
function postgresUser(): { uid: number; gid: number } | undefined {
  const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  return uid === undefined || gid === undefined ? undefined : { uid: Number(uid), gid: Number(gid) };
}

export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (bin === undefined) throw new Error(postgresUnavailable());
  const dir = await tempDir('ferry-pg-');
  const user = process.getuid?.() === 0 ? postgresUser() : undefined;
  if (user) await fsp.chown(dir, user.uid, user.gid);
  const as = user ? { uid: user.uid, gid: user.gid } : {};
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C.UTF-8' };
  const dataDir = path.join(dir, 'data');
  let server: ChildProcess | undefined;
  let admin: pg.Client | undefined;
  const stop = async (): Promise<void> => {
    await admin?.end().catch(() => undefined);
    if (server && server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((resolve) => server?.once('exit', resolve));
      server.kill('SIGINT'); // fast shutdown: disconnects clients, no checkpoint wait for them
      const timer = setTimeout(() => server?.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await fsp.rm(dir, { recursive: true, force: true });
  };
  try {
    await run(path.join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], { ...as, env });
    const log: string[] = [];
    server = spawn(path.join(bin, 'postgres'), [
      '-D', dataDir, '-k', dir, '-c', 'listen_addresses=', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
    ], { ...as, env, stdio: ['ignore', 'ignore', 'pipe'] });
    server.stderr?.on('data', (b: Buffer) => log.push(b.toString()));
    const started = server;
    admin = await waitFor('PostgreSQL to accept connections', async () => {
      if (started.exitCode !== null) throw new Error(`postgres exited with ${started.exitCode}: ${log.join('')}`);
      const c = new pg.Client({ host: dir, user: 'postgres', database: 'postgres' });
      try {
        await c.connect();
        return c;
      } catch {
        await c.end().catch(() => undefined);
        return undefined;
      }
    }, 30_000);
  } catch (err) {
    await stop();
    throw err;
  }
  let n = 0;
  const client = admin;
  return {
    async createDatabase() {
      const name = `ferry_${++n}`;
      await client.query(`CREATE DATABASE ${name}`);
      return `postgresql://postgres@localhost/${name}?host=${encodeURIComponent(dir)}`;
    },
    stop,
  };
}

function run(file: string, args: string[], opts: { uid?: number; gid?: number; env: NodeJS.ProcessEnv }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(file)} exited with ${code}: ${out}`))));
  });
}
