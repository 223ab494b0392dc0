/**
 * vLLM's runtime adapter endpoints: POST /v1/load_lora_adapter {lora_name, lora_path} reads an adapter folder inside
 * the adapter directory and registers it under a name; POST /v1/unload_lora_adapter {lora_name} forgets it (requests
 * running with it finish first). Both answer vLLM's plain-text success lines. A load that fails answers its error and
 * changes nothing. Off with `runtimeAdapters: false`.
 * Not here: the pool (serve/adapter-pool.ts).
 */
import type { FastifyInstance } from 'fastify';
import { LorakitError } from '../errors.ts';
import type { ServerState } from './generation.ts';
import { loadBody, parseBody, unloadBody } from './schemas.ts';

/** Mounts the load and unload endpoints. */
export function mountAdapters(app: FastifyInstance, state: ServerState): void {
  const off = () => {
    if (!state.runtimeAdapters)
      throw new LorakitError('LK_NOT_FOUND', 'runtime adapter loading is off on this server', { param: 'lora_name' });
  };
  app.post('/v1/load_lora_adapter', async (request, reply) => {
    off();
    const body = parseBody(loadBody, request.body);
    if (body.lora_name === state.modelName)
      throw new LorakitError('LK_INVALID_ARGUMENT', 'lora_name is the base model id', { param: 'lora_name' });
    await state.engine.parts.adapters.load(body.lora_name, body.lora_path);
    reply.type('text/plain; charset=utf-8');
    return `Success: LoRA adapter '${body.lora_name}' added successfully.`;
  });
  app.post('/v1/unload_lora_adapter', async (request, reply) => {
    off();
    const body = parseBody(unloadBody, request.body);
    const gone = state.engine.parts.adapters.unload(body.lora_name);
    if (gone === false)
      throw new LorakitError('LK_NOT_FOUND', `no adapter "${body.lora_name}" is loaded`, { param: 'lora_name' });
    if (gone) state.engine.parts.slots.forget(gone.key);
    reply.type('text/plain; charset=utf-8');
    return `Success: LoRA adapter '${body.lora_name}' removed successfully.`;
  });
}
