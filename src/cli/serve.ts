// `lorakit serve`: maps flags to `startServer()` (server/index.ts) and keeps it running until SIGINT or SIGTERM,
// then drains it. Nothing here that a library user of startServer would need.
import { LorakitError } from '../errors.ts';
import { intFlag, quantizeFlag, requiredFlag } from './flags.ts';
import type { CommandModule } from './main.ts';

interface Flags {
  model?: unknown;
  adapters?: unknown;
  port?: unknown;
  host?: unknown;
  apiKey?: unknown;
  servedModelName?: unknown;
  chatTemplate?: unknown;
  maxLoras?: unknown;
  maxLoraRank?: unknown;
  loraTargetModules?: unknown;
  adapterMemory?: unknown;
  kvCacheMemory?: unknown;
  maxBatch?: unknown;
  maxModelLen?: unknown;
  maxTokens?: unknown;
  maxConcurrent?: unknown;
  maxBody?: unknown;
  quantize?: unknown;
  runtimeAdapters?: boolean;
  log?: boolean;
}

const MIB = 2 ** 20;

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('serve', 'Serve a model and its adapters over an OpenAI-compatible HTTP API')
    .option('--model <dir>', 'Hugging Face model folder or .gguf file')
    .option('--adapters <dir>', 'Folder of PEFT adapter folders, served by name (the `model` field of a request)')
    .option('--port <n>', 'Port', { default: 8000 })
    .option('--host <addr>', 'Address to listen on', { default: '127.0.0.1' })
    .option('--quantize <mode>', "Hold the base's frozen Linears quantized: none, int8 or q4", { default: 'none' })
    .option('--api-key <key>', 'Require `Authorization: Bearer <key>` on /v1/ (repeatable)')
    .option('--served-model-name <id>', 'The base model id in requests (default: the --model argument)')
    .option('--chat-template <file>', "Jinja chat template for the base model (default: the model folder's)")
    .option('--max-loras <n>', 'Distinct adapters in one batch', { default: 16 })
    .option('--max-lora-rank <r>', 'Largest adapter rank', { default: 16 })
    .option('--lora-target-modules <names>', 'Comma-separated module names adapters may target (default: all Linear)')
    .option('--adapter-memory <MiB>', 'Memory for adapters kept loaded', { default: 256 })
    .option('--kv-cache-memory <MiB>', 'Memory of the KV cache', { default: 64 })
    .option('--max-batch <n>', 'Completions decoded together', { default: 32 })
    .option('--max-model-len <n>', 'Prompt + completion tokens (default: the model positions)')
    .option('--max-tokens <n>', 'Largest max_tokens a request may ask')
    .option('--max-concurrent <n>', 'Requests held at once; more are answered 429', { default: 256 })
    .option('--max-body <KiB>', 'Largest request body', { default: 1024 })
    .option('--no-runtime-adapters', 'Turn off /v1/load_lora_adapter and /v1/unload_lora_adapter')
    .option('--log', "Log every request (Fastify's logger)")
    .action(async (flags: Flags) => {
      const model = requiredFlag('model', flags.model, 'a Hugging Face model folder');
      const quantize = quantizeFlag(flags.quantize);
      const str = (flag: string, v: unknown) => {
        if (v === undefined) return undefined;
        if (typeof v !== 'string' && typeof v !== 'number')
          throw new LorakitError('LK_INVALID_ARGUMENT', `--${flag} expects a value`, { option: flag });
        return String(v);
      };
      const keys = flags.apiKey === undefined ? [] : Array.isArray(flags.apiKey) ? flags.apiKey : [flags.apiKey];
      const mib = (flag: string, v: unknown) => (intFlag(flag, v) ?? 0) * MIB || undefined;
      const targets = str('lora-target-modules', flags.loraTargetModules);
      const { startServer } = await import('../server/index.ts');
      const server = await startServer({
        model,
        quantize,
        adapterDir: str('adapters', flags.adapters) ?? null,
        port: intFlag('port', flags.port, 0),
        host: str('host', flags.host),
        apiKeys: keys.map((k) => String(k)),
        modelName: str('served-model-name', flags.servedModelName),
        chatTemplateFile: str('chat-template', flags.chatTemplate),
        maxLoras: intFlag('max-loras', flags.maxLoras),
        maxLoraRank: intFlag('max-lora-rank', flags.maxLoraRank),
        targetModules: targets ? targets.split(',').map((s) => s.trim()) : null,
        adapterMemory: mib('adapter-memory', flags.adapterMemory),
        kvCacheMemory: mib('kv-cache-memory', flags.kvCacheMemory),
        maxRows: intFlag('max-batch', flags.maxBatch),
        maxModelLen: intFlag('max-model-len', flags.maxModelLen),
        maxTokens: intFlag('max-tokens', flags.maxTokens),
        maxConcurrent: intFlag('max-concurrent', flags.maxConcurrent),
        maxBodyBytes: (intFlag('max-body', flags.maxBody) ?? 1024) * 1024,
        runtimeAdapters: flags.runtimeAdapters !== false,
        logger: flags.log === true,
      });
      const { limits, kv, slots } = server.engine.parts;
      console.log(
        `lorakit serve: ${server.state.modelName} on ${server.url} (OpenAI API under /v1; ${slots.slots - 1} ` +
          `adapter slots of rank ${slots.rank}, KV cache ${kv.capacity} tokens, batch ${limits.maxRows}` +
          `${quantize === 'none' ? '' : `, base quantized ${quantize}`})`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      console.log('lorakit serve: draining');
      await server.close();
      const { shutdownRuntime } = await import('../runtime/index.ts');
      await shutdownRuntime();
    });
};
