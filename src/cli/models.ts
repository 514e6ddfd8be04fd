/** `ferry models` (register, import, list, show, alias) and `ferry fixtures`. */
import { FerryClient, type ModelVersion, type TensorSpecJson } from '../client/index.js';
import { writeFixtures } from '../fixtures/index.js';
import { out, parse, str, UsageError } from './args.js';

export async function modelsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const client = FerryClient.fromEnv();
  switch (sub) {
    case 'register': {
      const { values, positionals } = parse(rest, { name: { type: 'string' }, description: { type: 'string' } });
      const file = positionals[0];
      const name = str(values, 'name');
      if (file === undefined || name === undefined) throw new UsageError('models register: usage: ferry models register <path> --name NAME');
      const description = str(values, 'description');
      const v = await client.registerModel(file, name, description === undefined ? {} : { description });
      out(values, v, describeVersion(v));
      if (v.status !== 'READY') process.exitCode = 1;
      return;
    }
    case 'import': {
      const { values, positionals } = parse(rest, {});
      const source = positionals[0];
      if (source === undefined) throw new UsageError('models import: usage: ferry models import <dir | archive.tar[.gz]>');
      const r = await client.importModels(source);
      const failures = r.results.filter((x) => x.status !== 'READY').map((x) => `  ${x.name}: ${x.error_code ?? ''} ${x.message ?? ''}`);
      out(values, r, [`Registered ${r.registered} model versions; ${r.failed} failed.`, ...failures].join('\n'));
      if (r.failed > 0) process.exitCode = 1;
      return;
    }
    case 'list': {
      const { values } = parse(rest, { filter: { type: 'string' } });
      const filter = str(values, 'filter');
      const r = await client.searchRegisteredModels(filter === undefined ? {} : { filter });
      const models = r.registered_models ?? [];
      const rows = models.map((m) => `${m.name}\tlatest=${m.latest_versions[0]?.version ?? '-'}\t${m.aliases.map((a) => `${a.alias}=v${a.version}`).join(',')}`);
      out(values, models, rows.length ? rows.join('\n') : 'No registered models. Register one with: ferry models register <path> --name NAME');
      return;
    }
    case 'show': {
      const { values, positionals } = parse(rest, { version: { type: 'string' }, alias: { type: 'string' } });
      const name = positionals[0];
      if (name === undefined) throw new UsageError('models show: usage: ferry models show <name> [--version N | --alias A]');
      const version = str(values, 'version');
      const alias = str(values, 'alias');
      if (version !== undefined || alias !== undefined) {
        const v = version !== undefined ? await client.getModelVersion(name, version) : await client.getModelVersionByAlias(name, alias ?? '');
        out(values, v, describeVersion(v));
      } else {
        const m = await client.getRegisteredModel(name);
        const versions = (await client.searchModelVersions({ filter: `name = '${name.replace(/'/g, "''")}'` })).model_versions ?? [];
        out(values, { ...m, versions }, [`${m.name}${m.description ? ` — ${m.description}` : ''}`, ...versions.map((v) => `  ${describeVersion(v).split('\n')[0] ?? ''}`)].join('\n'));
      }
      return;
    }
    case 'alias': {
      const { values, positionals } = parse(rest, {});
      const [name, alias, version] = positionals;
      if (name === undefined || alias === undefined || version === undefined) throw new UsageError('models alias: usage: ferry models alias <name> <alias> <version>');
      await client.setAlias(name, alias, version);
      out(values, { name, alias, version }, `${name}@${alias} → version ${version}`);
      return;
    }
    default:
      throw new UsageError(`models: unknown subcommand '${sub ?? ''}' (register, import, list, show, alias).`);
  }
}

function describeVersion(v: ModelVersion): string {
  const lines = [`${v.name} version ${v.version}: ${v.status}${v.aliases.length ? ` (${v.aliases.join(', ')})` : ''}`];
  if (v.status_message) lines.push(`  ${v.status_message}`);
  if (v.signature) {
    const fmt = (s: TensorSpecJson): string => `${s.name}: ${s.dtype}${s.shape ? `[${s.shape.join(', ')}]` : ''}`;
    lines.push(`  flavor: ${v.flavor ?? '?'}`, `  inputs: ${v.signature.inputs.map(fmt).join('; ')}`, `  outputs: ${v.signature.outputs.map(fmt).join('; ')}`);
  }
  return lines.join('\n');
}

export async function fixturesCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, {});
  const paths = await writeFixtures(positionals[0] ?? 'fixtures');
  out(values, paths, Object.entries(paths).map(([k, p]) => `${k}: ${p}`).join('\n'));
}
