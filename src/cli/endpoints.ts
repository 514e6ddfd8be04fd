/** `ferry endpoints`, `ferry serve` and `ferry query`. */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseDurationMs } from '../config/index.js';
import {
  exampleRequest, FerryApiError, FerryClient, type EndpointConfigInput, type ModelVersion, type ServedEntityInput, type ServingEndpoint,
} from '../client/index.js';
import { out, parse, str, table, UsageError, type Values } from './args.js';

const entityOptions = {
  model: { type: 'string' }, version: { type: 'string' }, 'workload-size': { type: 'string' }, 'workload-type': { type: 'string' },
  file: { type: 'string' }, 'no-wait': { type: 'boolean' },
} as const;

/** A config from --file (a JSON file) or from --model/--version and friends. */
async function configFromFlags(values: Values, what: string): Promise<EndpointConfigInput> {
  const file = str(values, 'file');
  if (file !== undefined) return JSON.parse(await fsp.readFile(file, 'utf8')) as EndpointConfigInput;
  const model = str(values, 'model');
  const version = str(values, 'version');
  if (model === undefined || version === undefined) throw new UsageError(`${what}: give --model NAME --version V (a number or an alias), or --file config.json`);
  const entity: ServedEntityInput = { entity_name: model, entity_version: version };
  const size = str(values, 'workload-size');
  const type = str(values, 'workload-type');
  // The server validates both and names the allowed values.
  if (size !== undefined) entity.workload_size = size as NonNullable<ServedEntityInput['workload_size']>;
  if (type !== undefined) entity.workload_type = type as NonNullable<ServedEntityInput['workload_type']>;
  return { served_entities: [entity] };
}

export async function endpointsCommand(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === 'inference-table') return inferenceTableCommand(rest);
  const client = FerryClient.fromEnv();
  const { values, positionals } = parse(rest, entityOptions);
  const name = positionals[0];
  const needName = (): string => {
    if (name === undefined) throw new UsageError(`endpoints ${sub ?? ''}: give the endpoint name`);
    return name;
  };
  switch (sub) {
    case 'create': {
      const file = str(values, 'file');
      let e: ServingEndpoint;
      if (file !== undefined && name === undefined) {
        const body = JSON.parse(await fsp.readFile(file, 'utf8')) as { name: string; config: EndpointConfigInput };
        e = await client.createEndpoint(body.name, body.config);
      } else {
        e = await client.createEndpoint(needName(), await configFromFlags(values, 'endpoints create'));
      }
      if (!values['no-wait']) e = await client.waitForEndpoint(e.name, { onProgress: progress(values) });
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'update': {
      let e = await client.updateEndpointConfig(needName(), await configFromFlags(values, 'endpoints update'));
      if (!values['no-wait']) e = await client.waitForEndpoint(e.name, { onProgress: progress(values) });
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'list': {
      const list = await client.listEndpoints();
      out(values, list, list.length ? list.map((e) => describeEndpoint(e).split('\n')[0]).join('\n') : 'No serving endpoints. Create one with: ferry serve <model>');
      return;
    }
    case 'get': {
      const e = await client.getEndpoint(needName());
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'cancel': {
      const e = await client.cancelEndpointUpdate(needName());
      out(values, e, describeEndpoint(e));
      return;
    }
    case 'delete': {
      await client.deleteEndpoint(needName());
      out(values, {}, `Deleted endpoint '${needName()}'.`);
      return;
    }
    case 'logs': {
      const served = positionals[1];
      if (served === undefined) throw new UsageError('endpoints logs: usage: ferry endpoints logs <name> <served-entity>');
      process.stdout.write(await client.endpointLogs(needName(), served));
      return;
    }
    default:
      throw new UsageError(`endpoints: unknown subcommand '${sub ?? ''}' (create, update, list, get, cancel, delete, logs, inference-table).`);
  }
}

/** `ferry endpoints inference-table <name>`: recent rows as a table, or every matching row as JSON Lines / CSV. */
async function inferenceTableCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { since: { type: 'string' }, status: { type: 'string' }, 'served-entity': { type: 'string' }, format: { type: 'string' }, limit: { type: 'string' } });
  const name = positionals[0];
  if (name === undefined) throw new UsageError('endpoints inference-table: usage: ferry endpoints inference-table <name> [--since 1h] [--status 500] [--format jsonl|csv]');
  const since = str(values, 'since');
  const sinceMs = since === undefined ? undefined : parseDurationMs(since);
  if (since !== undefined && sinceMs === undefined) throw new UsageError(`endpoints inference-table: --since ${JSON.stringify(since)} is not a duration such as 1h, 30m or 7d`);
  const status = str(values, 'status');
  if (status !== undefined && !/^[1-5]\d\d$/.test(status)) throw new UsageError(`endpoints inference-table: --status ${JSON.stringify(status)} is not an HTTP status code such as 500`);
  const format = str(values, 'format');
  if (format !== undefined && format !== 'jsonl' && format !== 'csv') throw new UsageError(`endpoints inference-table: --format ${JSON.stringify(format)}: expected jsonl or csv`);
  const filters = {
    ...(sinceMs === undefined ? {} : { startMs: Date.now() - sinceMs }),
    ...(status === undefined ? {} : { status: Number(status) }),
    ...(str(values, 'served-entity') === undefined ? {} : { servedEntity: str(values, 'served-entity') as string }),
  };
  const client = FerryClient.fromEnv();
  if (format !== undefined) {
    await pipeline(await client.exportInferenceTable(name, format, filters), process.stdout, { end: false });
    return;
  }
  const r = await client.inferenceTable(name, { ...filters, maxResults: Number(str(values, 'limit') ?? 20) });
  out(values, r, r.rows.length === 0 ? `No inference table rows for '${name}' (is ai_gateway.inference_table_config enabled?).` : table(
    ['TIME', 'REQUEST ID', 'STATUS', 'MS', 'ENTITY', 'PRINCIPAL', 'CLIENT REQUEST ID'],
    r.rows.map((x) => [new Date(x.timestamp_ms).toISOString(), x.request_id, String(x.status_code), x.execution_time_ms.toFixed(1), x.served_entity, x.principal, x.client_request_id ?? '']),
  ));
}

/** Prints progress while waiting: a rewritten line on a terminal, one line per change otherwise. */
function progress(values: Values): (e: ServingEndpoint) => void {
  const started = Date.now();
  let last = '';
  return (e) => {
    if (values.json) return;
    const entities = (e.pending_config ?? e.config)?.served_entities ?? [];
    const line = `Waiting for endpoint '${e.name}': ${e.state.config_update === 'IN_PROGRESS' ? 'updating' : e.state.ready.toLowerCase()}; ${entities.map((x) => `${x.name} ${x.state.deployment.replace('DEPLOYMENT_', '').toLowerCase()}`).join(', ')}`;
    if (process.stderr.isTTY) process.stderr.write(`\r${line} (${((Date.now() - started) / 1000).toFixed(1)}s)\x1b[K`);
    else if (line !== last) process.stderr.write(line + '\n');
    last = line;
  };
}

function describeEndpoint(e: ServingEndpoint): string {
  const lines = [`${e.name}\t${e.state.ready}\t${e.state.config_update}`];
  if (e.state.config_update_message) lines.push(`  ${e.state.config_update_message}`);
  for (const [label, c] of [['config', e.config], ['pending', e.pending_config]] as const) {
    if (!c) continue;
    const pct = new Map(c.traffic_config.routes.map((r) => [r.served_entity_name, r.traffic_percentage]));
    lines.push(`  ${label} v${c.config_version}:`);
    for (const x of c.served_entities) {
      const f = x.model_family;
      const what = f === undefined
        ? `${x.entity_name ?? ''} v${x.entity_version ?? ''}${x.entity_alias ? ` (@${x.entity_alias})` : ''}`
        : `family ${[f.name_prefix === undefined ? '' : `${f.name_prefix}*`, f.tag === undefined ? '' : `tag ${f.tag}`].filter((t) => t !== '').join(' ')}`
          + (x.state.family === undefined ? '' : ` (${x.state.family.replicas.reduce((a, r) => a + r.models_loaded, 0)} models loaded, hit rate ${x.state.family.hit_rate ?? '-'})`);
      lines.push(`    ${x.name}: ${what} ${pct.get(x.name) ?? 0}% ${x.state.deployment} replicas ${x.state.replicas.ready}/${x.state.replicas.desired}`);
      if (x.state.deployment_state_message) lines.push(`      ${x.state.deployment_state_message.split('\n').join('\n      ')}`);
    }
  }
  return lines.join('\n');
}

export async function queryCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { file: { type: 'string' }, model: { type: 'string' } });
  const name = positionals[0];
  const inline = values.json === true ? positionals[1] : undefined;
  const file = str(values, 'file');
  if (name === undefined || (inline === undefined && file === undefined)) throw new UsageError('query: usage: ferry query <endpoint> --json \'{"inputs": [[1, 2, 3, 4]]}\' | --file request.json [--model NAME[/VERSION|@ALIAS]]');
  let body: unknown;
  try {
    body = JSON.parse(inline ?? await fsp.readFile(file ?? '', 'utf8'));
  } catch (err) {
    throw new UsageError(`query: the request is not valid JSON: ${(err as Error).message}`);
  }
  process.stdout.write(JSON.stringify(await FerryClient.fromEnv().query(name, body, str(values, 'model'))) + '\n');
}

/** `ferry serve`: the one command from a model file (or a registered version) to a working endpoint. */
export async function serveCommand(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { endpoint: { type: 'string' }, name: { type: 'string' } });
  const target = positionals[0];
  if (target === undefined) throw new UsageError('serve: usage: ferry serve <path | models:/NAME/VERSION | models:/NAME@ALIAS> [--endpoint E]');
  const client = FerryClient.fromEnv();
  let version: ModelVersion;
  let requested: string | undefined;
  const uri = /^models:\/([^/@]+)(?:\/(\d+)|@([A-Za-z_][\w-]*))$/.exec(target);
  if (uri) {
    const [, model = '', num, alias] = uri;
    version = num !== undefined ? await client.getModelVersion(model, num) : await client.getModelVersionByAlias(model, alias ?? '');
    requested = alias;
  } else if (target.startsWith('models:')) {
    throw new UsageError(`serve: '${target}' is not a model URI: use models:/NAME/VERSION or models:/NAME@ALIAS`);
  } else {
    const model = str(values, 'name') ?? (path.basename(path.resolve(target)).replace(/\.(onnx|gguf)$/i, '').replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'model');
    if (!values.json) process.stderr.write(`Registering ${target} as model '${model}'...\n`);
    version = await client.registerModel(target, model);
    if (version.status !== 'READY') throw new FerryApiError(0, 'FAILED_REGISTRATION', `Model '${model}' version ${version.version} failed to register: ${version.status_message}`);
  }
  await serveVersion(client, version, str(values, 'endpoint') ?? version.name.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 63), values, requested);
}

/**
 * Creates (or updates) `endpoint` to serve `version` (named by `alias` when given, so the endpoint
 * records it), waits until READY, prints a curl line.
 */
export async function serveVersion(client: FerryClient, version: ModelVersion, endpoint: string, values: Values, alias?: string): Promise<void> {
  const config: EndpointConfigInput = { served_entities: [{ entity_name: version.name, entity_version: alias ?? version.version }] };
  // A caller who is not an admin gets 403 for an endpoint that does not exist (the answer never
  // tells whether it does): create it then, which fails clearly if someone else holds the name.
  const existing = await client.getEndpoint(endpoint).catch((err: unknown) => {
    if (err instanceof FerryApiError && (err.errorCode === 'RESOURCE_DOES_NOT_EXIST' || err.errorCode === 'PERMISSION_DENIED')) return undefined;
    throw err;
  });
  const current = existing?.config?.served_entities;
  const unchanged = existing?.state.ready === 'READY' && current?.length === 1 && current[0]?.entity_name === version.name && current[0].entity_version === version.version;
  if (!unchanged) await (existing ? client.updateEndpointConfig(endpoint, config) : client.createEndpoint(endpoint, config));
  const e = await client.waitForEndpoint(endpoint, { onProgress: progress(values) });
  if (process.stderr.isTTY && !values.json) process.stderr.write('\n');
  const example = exampleRequest(version);
  const data = 'body' in example ? JSON.stringify(example.body).replace(/'/g, "'\\''") : '<your request body>';
  const curl = `curl -s ${client.url}/serving-endpoints/${endpoint}/invocations -H "Authorization: Bearer ${client.tokenForDisplay}" -H "Content-Type: application/json" -d '${data}'`;
  const note = 'tooLarge' in example ? `\n\n${example.tooLarge}` : '';
  out(values, { endpoint: e, curl, ...('tooLarge' in example ? { example_problem: example.tooLarge } : {}) }, `Endpoint '${endpoint}' is READY, serving ${version.name} version ${version.version}.\n\nQuery it:\n  ${curl}${note}`);
}

