// `lorakit fl-client --superlink URL --config run.yaml [--key node.pem]`: join a Flower 1.42 federation (a SuperLink
// running the ServerApp of interop/flower_app) as a client that trains the adapter of run.yaml on its own data each
// round, until the run finishes. docs/federated.md has the whole setup.
import type { CommandModule } from './main.ts';

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('fl-client', 'Join a Flower federation as a lorakit client')
    .usage(
      'fl-client --superlink URL --config run.yaml [--set key=value ...] [--key node.pem]\n\n' +
        "  Joins the Flower SuperLink's Fleet API at URL (flwr 1.42; http://host:8000 by default) and answers its\n" +
        '  train and evaluate rounds with the model, data and adapter of run.yaml (see docs/federated.md).',
    )
    .option('--superlink <url>', 'the SuperLink Fleet API, e.g. http://127.0.0.1:8000')
    .option('--config <file>', 'the run config (YAML): model, this client’s data (with held_out), adapter')
    .option('--set <key=value>', 'override a config value by dotted path (repeatable)')
    .option('--key <file>', 'PKCS#8 PEM private key of this node (created if missing), to rejoin as the same node')
    .option('--heartbeat <seconds>', 'heartbeat interval announced to the SuperLink, 10–1800 s (default 30, as Flower)')
    .example('lorakit fl-client --superlink http://10.0.0.5:8000 --config client.yaml')
    .action(
      async (opts: {
        superlink?: string;
        config?: string;
        set?: string | string[];
        key?: string;
        heartbeat?: string;
      }) => {
        const { LorakitError } = await import('../errors.ts');
        if (!opts.superlink) throw new LorakitError('LK_INVALID_ARGUMENT', 'fl-client: --superlink <url> is required');
        if (!opts.config) throw new LorakitError('LK_INVALID_ARGUMENT', 'fl-client: --config <file> is required');
        const heartbeat = opts.heartbeat === undefined ? undefined : Number(opts.heartbeat);
        if (heartbeat !== undefined && !(heartbeat > 0)) {
          throw new LorakitError(
            'LK_INVALID_ARGUMENT',
            `fl-client: --heartbeat must be a positive number of seconds, got "${opts.heartbeat}"`,
          );
        }
        const { loadRunConfig } = await import('../train/index.ts');
        const { runLoraClient, loadOrCreateIdentity } = await import('../federated/index.ts');
        const { shutdownRuntime } = await import('../runtime/index.ts');
        const sets = opts.set === undefined ? [] : Array.isArray(opts.set) ? opts.set.map(String) : [String(opts.set)];
        const config = loadRunConfig(opts.config, sets);
        const abort = new AbortController();
        const onSigint = () => {
          console.error('\nlorakit: leaving the federation...');
          abort.abort();
        };
        process.once('SIGINT', onSigint);
        try {
          const identity = opts.key ? await loadOrCreateIdentity(opts.key) : undefined;
          const r = await runLoraClient({
            superlink: opts.superlink,
            config,
            identity,
            heartbeatInterval: heartbeat,
            signal: abort.signal,
            log: (line) => console.log(line),
          });
          const answered = Object.entries(r.answered)
            .map(([k, v]) => `${v} ${k}`)
            .join(', ');
          console.log(`node ${r.nodeId}: answered ${answered || 'nothing'}; ${r.bytesPushed} bytes pushed`);
        } finally {
          process.off('SIGINT', onSigint);
          await shutdownRuntime();
        }
      },
    );
};
