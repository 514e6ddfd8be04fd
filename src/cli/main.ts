/**
 * The `ferry` command. Exit codes: 0 success, 1 the request failed (the server said no),
 * 2 usage error, 3 the server could not be reached.
 */
import { FerryApiError } from '../client/index.js';
import { FerryError } from '../errors.js';
import { ReplicaArgvError } from '../replica/options.js';
import { auditCommand, permissionsCommand, principalsCommand, tokensCommand, whoamiCommand } from './access.js';
import { UsageError } from './args.js';
import { endpointsCommand, queryCommand, serveCommand } from './endpoints.js';
import { fixturesCommand, modelsCommand } from './models.js';
import { replicaCommand } from './replica.js';
import { serverCommand, demoCommand } from './server.js';
import { exitOnStopSignals } from './signals.js';
import { SIMULATE_HELP, simulateCommand } from './simulate.js';

const HELP = `ferry — serve models behind secure REST endpoints

Usage: ferry <command> [options]

Commands:
  server                      Run the Ferry server (API, registry) on 127.0.0.1:8080
      --host H --port P --data-dir DIR --config FILE.json
      --tls-cert FILE --tls-key FILE   Serve HTTPS only, with this PEM certificate chain and key
      --grpc-port P                    Also serve OIP v2 over gRPC (KServe/Triton clients) on P
      --gateway-workers N              Gateway processes serving inference (default: one per core)
  demo                        Run the server with a demo model registered (what \`npm start\` runs)
      --port P --data-dir DIR [--tls-cert FILE --tls-key FILE]
  models register <path> --name NAME [--description TEXT]
                              Upload a .onnx file, a directory with model.onnx, or an MLflow
                              model directory, and register it as a new version of NAME
  models import <dir|archive> Register every <name>.onnx file in DIR (or in a .tar/.tar.gz/.tgz)
                              as a new version of <name>, thousands per call (bulk
                              registration); failures listed per model
  models list [--filter "name LIKE 'iris%'"]
  models show <name> [--version N | --alias A]
  models alias <name> <alias> <version>
                              Point an alias (e.g. champion) at a version
  serve <path | models:/NAME/VERSION | models:/NAME@ALIAS> [--endpoint E] [--name MODEL]
                              Register (if a path) and serve a model; waits until READY and
                              prints a curl command that works as pasted
  endpoints create <name> --model NAME --version V|ALIAS [--workload-size Small|Medium|Large]
                    [--workload-type CPU|GPU_SMALL|...] | --file body.json  [--no-wait]
  endpoints update <name> --model NAME --version V | --file config.json  [--no-wait]
  endpoints list | get <name> | delete <name>
  endpoints cancel <name>     Cancel the update in progress (the previous config keeps serving)
  endpoints logs <name> <served-entity>
  endpoints inference-table <name> [--since 1h] [--status 500] [--served-entity E] [--limit N]
                    [--format jsonl|csv]  Logged requests and responses, newest first (CAN_MANAGE);
                              --format streams every matching row
  query <endpoint> --json '{"inputs": [[1, 2, 3, 4]]}' | --file request.json [--model NAME[/VERSION|@ALIAS]] (family endpoints)
  whoami                      The principal FERRY_TOKEN belongs to
${SIMULATE_HELP}
  principals create <name> [--service] [--admin] | list | delete <name>      (admins)
  tokens create [--for PRINCIPAL] [--lifetime 90d|12h] [--comment TEXT]
                              A new token (prints the secret once; --for: admins, for another principal)
  tokens list [--all] | revoke <token-id> [--any]
  permissions get endpoint|model|experiment <name or experiment id>
  permissions grant endpoint|model|experiment <name or id> (--user U | --service-principal S | --group users) --level LEVEL
  permissions revoke endpoint|model|experiment <name or id> (--user U | --service-principal S | --group users)
                              Levels: endpoints CAN_VIEW, CAN_QUERY, CAN_MANAGE; models CAN_READ, CAN_EDIT, CAN_MANAGE
  audit [--principal P] [--since 1h] [--limit N]
                              Control-plane changes, newest first (admins)
  fixtures [dir]              Write the built-in example models (default ./fixtures)
  replica                     Run one model replica (started by the server; see docs/architecture.md);
                              --pool ID: start warm and take the options over IPC from the server;
                              pod mode: --listen [HOST]:PORT (HOST default $POD_IP) --artifact-path KEY
                              --sha256 HEX: fetch the model into --dir from the store in --artifact-store
                              JSON (default $FERRY_ARTIFACT_STORE) and verify it; a family replica
                              (--family-cache-bytes) with --members-from-store fetches each member
                              from that store on a miss, as the gateway's request names it

Common options:
  --json                      Machine-readable output
  -h, --help                  Show help

Environment:
  FERRY_URL        Server URL for client commands (default http://127.0.0.1:8080)
  FERRY_TOKEN      API token for client commands (default: <FERRY_DATA_DIR>/admin-token)
  FERRY_DATA_DIR   Data directory of a local server (default ./.ferry)
  FERRY_ADMIN_TOKEN  Admin token for 'ferry server' (otherwise generated on first start)
  NODE_EXTRA_CA_CERTS  PEM file of extra CAs the client trusts (a server's self-signed certificate)
`;

export async function main(argv: string[]): Promise<void> {
  exitOnStopSignals();
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        process.stdout.write(HELP);
        return;
      case 'server': return await serverCommand(rest, HELP);
      case 'demo': return await demoCommand(rest, HELP);
      case 'replica': return await replicaCommand(rest);
      case 'models': return await modelsCommand(rest);
      case 'endpoints': return await endpointsCommand(rest);
      case 'query': return await queryCommand(rest);
      case 'serve': return await serveCommand(rest);
      case 'fixtures': return await fixturesCommand(rest);
      case 'whoami': return await whoamiCommand(rest);
      case 'principals': return await principalsCommand(rest);
      case 'tokens': return await tokensCommand(rest);
      case 'permissions': return await permissionsCommand(rest);
      case 'audit': return await auditCommand(rest);
      case 'simulate': return await simulateCommand(rest);
      default: throw new UsageError(`Unknown command '${cmd}'.`);
    }
  } catch (err) {
    process.exitCode = report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof UsageError || err instanceof ReplicaArgvError) {
    process.stderr.write(`ferry: ${err instanceof ReplicaArgvError ? `replica: ${err.message}.` : err.message}\nRun 'ferry --help' for usage.\n`);
    return 2;
  }
  if (err instanceof FerryApiError) {
    process.stderr.write(`ferry: ${err.errorCode === 'UNREACHABLE' ? '' : `${err.errorCode}: `}${err.message}\n`);
    return err.errorCode === 'UNREACHABLE' ? 3 : 1;
  }
  if (err instanceof FerryError) {
    process.stderr.write(`ferry: ${err.code}: ${err.message}\n`);
    return 1;
  }
  process.stderr.write(`ferry: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  return 1;
}
