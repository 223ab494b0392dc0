/**
 * GET /v1/models and GET /v1/models/{id}: the base model and every adapter the server has loaded or registered,
 * as vLLM lists them (an adapter's `parent` is the base id, its `root` its path inside the adapter directory).
 * Adapters not used yet are not listed: any folder in the adapter directory is servable by its name anyway.
 * Not here: loading (adapters.ts).
 */
import { relative } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { LorakitError } from '../errors.ts';
import type { ServerState } from './generation.ts';

/** The model cards the server lists. */
function cards(state: ServerState): Record<string, unknown>[] {
  const pool = state.engine.parts.adapters;
  const base = {
    id: state.modelName,
    object: 'model',
    created: state.created,
    owned_by: 'lorakit',
    root: state.modelName,
    parent: null,
    max_model_len: state.engine.parts.limits.maxModelLen,
  };
  const resident = new Map(pool.residents().map((a) => [a.name, a]));
  const root = pool.opts.dir;
  const adapters = [...pool.registered()].map(([name, dir]) => ({
    id: name,
    object: 'model',
    created: resident.get(name)?.created ?? state.created,
    owned_by: 'lorakit',
    root: root ? relative(root, dir) || '.' : name,
    parent: state.modelName,
  }));
  return [base, ...adapters];
}

/** Mounts the model listing. */
export function mountModels(app: FastifyInstance, state: ServerState): void {
  app.get('/v1/models', async () => ({ object: 'list', data: cards(state) }));
  app.get('/v1/models/*', async (request) => {
    const id = (request.params as { '*': string })['*'];
    const card = cards(state).find((c) => c.id === id);
    if (!card) throw new LorakitError('LK_NOT_FOUND', `no model "${id.slice(0, 200)}" is loaded`, { param: 'model' });
    return card;
  });
}
