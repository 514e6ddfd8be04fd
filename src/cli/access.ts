/** Who may do what: `ferry whoami`, `principals`, `tokens`, `permissions` and `audit`. */
import { parseDurationMs } from '../config/index.js';
import { FerryClient, type AccessControlEntry, type ObjectPermissions, type PermissionObject } from '../client/index.js';
import { out, parse, str, table, UsageError } from './args.js';

export async function whoamiCommand(args: string[]): Promise<void> {
  const { values } = parse(args, {});
  const me = await FerryClient.fromEnv().me();
  out(values, me, `${me.name} (${me.type === 'USER' ? 'user' : 'service principal'}${me.admin ? ', admin' : ''})`);
}

export async function principalsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, { service: { type: 'boolean' }, admin: { type: 'boolean' } });
  const client = FerryClient.fromEnv();
  const name = positionals[0];
  switch (sub) {
    case 'create': {
      if (name === undefined) throw new UsageError('principals create: give the principal name');
      const p = await client.createPrincipal(name, { type: values.service ? 'SERVICE_PRINCIPAL' : 'USER', admin: values.admin === true });
      out(values, p, `Created ${p.type === 'USER' ? 'user' : 'service principal'} ${p.name}${p.admin ? ' (admin)' : ''}. Give it a token: ferry tokens create --for ${p.name}`);
      return;
    }
    case 'list': {
      const list = await client.listPrincipals();
      out(values, list, table(['NAME', 'TYPE', 'ADMIN'], list.map((p) => [p.name, p.type, p.admin ? 'yes' : ''])));
      return;
    }
    case 'delete':
      if (name === undefined) throw new UsageError('principals delete: give the principal name');
      await client.deletePrincipal(name);
      out(values, {}, `Deleted ${name} with its tokens and grants.`);
      return;
    default: throw new UsageError(`Unknown subcommand 'principals ${sub ?? ''}'.`);
  }
}

export async function tokensCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    for: { type: 'string' }, lifetime: { type: 'string' }, comment: { type: 'string' }, all: { type: 'boolean' }, any: { type: 'boolean' },
  });
  const client = FerryClient.fromEnv();
  switch (sub) {
    case 'create': {
      const lifetime = str(values, 'lifetime');
      const t = await client.createToken({
        ...(lifetime === undefined ? {} : { lifetimeSeconds: lifetimeSeconds(lifetime) }),
        ...(str(values, 'comment') === undefined ? {} : { comment: str(values, 'comment') as string }),
        ...(str(values, 'for') === undefined ? {} : { forPrincipal: str(values, 'for') as string }),
      });
      const expires = t.token_info.expiry_time === -1 ? 'never' : new Date(t.token_info.expiry_time).toISOString();
      out(values, t, `Token ${t.token_info.token_id} for ${t.token_info.owner} (expires ${expires}); shown once:\n  ${t.token_value}`);
      return;
    }
    case 'list': {
      const list = await client.listTokens({ all: values.all === true });
      out(values, list, table(['ID', 'OWNER', 'CREATED', 'EXPIRES', 'COMMENT'], list.map((t) => [
        t.token_id, t.owner, new Date(t.creation_time).toISOString(), t.expiry_time === -1 ? 'never' : new Date(t.expiry_time).toISOString(), t.comment,
      ])));
      return;
    }
    case 'revoke': {
      const id = positionals[0];
      if (id === undefined) throw new UsageError('tokens revoke: give the token id (see ferry tokens list)');
      await client.revokeToken(id, { any: values.any === true });
      out(values, {}, `Revoked token ${id}.`);
      return;
    }
    default: throw new UsageError(`Unknown subcommand 'tokens ${sub ?? ''}'.`);
  }
}

/** "90d" → 7776000, "12h" → 43200, "3600" / "3600s" → 3600. */
function lifetimeSeconds(text: string): number {
  const days = /^(\d+)d$/.exec(text);
  const ms = days ? Number(days[1]) * 86_400_000 : parseDurationMs(/^\d+$/.test(text) ? `${text}s` : text);
  if (ms === undefined) throw new UsageError(`tokens create: --lifetime ${JSON.stringify(text)} is not a duration such as 90d, 12h or 3600s`);
  return Math.round(ms / 1000);
}

/** The objects `ferry permissions` takes, by the word used on the command line. */
const PERMISSION_KINDS: Record<string, PermissionObject | undefined> = { endpoint: 'serving-endpoint', model: 'registered-model', experiment: 'experiment' };

export async function permissionsCommand(args: string[]): Promise<void> {
  const [sub, kind, name, ...rest] = args;
  const { values } = parse(rest, { user: { type: 'string' }, 'service-principal': { type: 'string' }, group: { type: 'string' }, level: { type: 'string' } });
  const object = kind === undefined ? undefined : PERMISSION_KINDS[kind];
  if (object === undefined || name === undefined) throw new UsageError(`permissions ${sub ?? ''}: give 'endpoint <name>', 'model <name>' or 'experiment <id>'`);
  const client = FerryClient.fromEnv();
  const who = (): Omit<AccessControlEntry, 'permission_level'> => {
    const entries = [['user_name', str(values, 'user')], ['service_principal_name', str(values, 'service-principal')], ['group_name', str(values, 'group')]]
      .filter(([, v]) => v !== undefined);
    if (entries.length !== 1) throw new UsageError(`permissions ${sub ?? ''}: give exactly one of --user, --service-principal, --group`);
    return Object.fromEntries(entries) as Omit<AccessControlEntry, 'permission_level'>;
  };
  let p: ObjectPermissions;
  switch (sub) {
    case 'get':
      p = await client.getPermissions(object, name);
      break;
    case 'grant': {
      const level = str(values, 'level');
      if (level === undefined) throw new UsageError('permissions grant: give --level');
      p = await client.setPermissions(object, name, [{ ...who(), permission_level: level }]);
      break;
    }
    case 'revoke': {
      const target = who();
      const current = await client.getPermissions(object, name);
      const same = (e: Omit<AccessControlEntry, 'permission_level'>): boolean =>
        e.user_name === target.user_name && e.service_principal_name === target.service_principal_name && e.group_name === target.group_name;
      const kept = current.access_control_list.flatMap((e) => e.all_permissions.filter((x) => !x.inherited && !same(e)).map((x) => ({
        ...(e.user_name === undefined ? {} : { user_name: e.user_name }),
        ...(e.service_principal_name === undefined ? {} : { service_principal_name: e.service_principal_name }),
        ...(e.group_name === undefined ? {} : { group_name: e.group_name }),
        permission_level: x.permission_level,
      })));
      p = await client.setPermissions(object, name, kept, { replace: true });
      break;
    }
    default: throw new UsageError(`Unknown subcommand 'permissions ${sub ?? ''}'.`);
  }
  out(values, p, table(['WHO', 'LEVEL'], p.access_control_list.map((e) => [
    e.user_name ?? e.service_principal_name ?? `group ${e.group_name ?? ''}`,
    e.all_permissions.map((x) => x.permission_level + (x.inherited ? ' (inherited)' : '')).join(', '),
  ])));
}


export async function auditCommand(args: string[]): Promise<void> {
  const { values } = parse(args, { principal: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' } });
  const since = str(values, 'since');
  const sinceMs = since === undefined ? undefined : parseDurationMs(since);
  if (since !== undefined && sinceMs === undefined) throw new UsageError(`audit: --since ${JSON.stringify(since)} is not a duration such as 1h or 30m`);
  const r = await FerryClient.fromEnv().auditLog({
    ...(str(values, 'principal') === undefined ? {} : { principal: str(values, 'principal') as string }),
    ...(sinceMs === undefined ? {} : { sinceMs: Date.now() - sinceMs }),
    maxResults: Number(str(values, 'limit') ?? 100),
  });
  // COUNT: how many calls a row stands for (unauthenticated calls over the per-minute cap share one).
  out(values, r, table(['TIME', 'WHO', 'FROM', 'ACTION', 'PATH', 'RESULT', 'COUNT'], r.entries.map((e) => [
    new Date(e.timestamp).toISOString(), e.principal === '' ? '(anonymous)' : e.principal, e.source_address, e.action.split(' ')[0] ?? '', e.path,
    `${e.status}${e.error_code === undefined ? '' : ` ${e.error_code}`}`, String(e.count ?? 1),
  ])));
}

