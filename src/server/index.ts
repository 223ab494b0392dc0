/**
 * server/: the OpenAI-compatible HTTP server over the serving engine. `startServer` is what `lorakit serve` runs:
 * it opens the model folder, builds the engine (serve/), the Fastify app (app.ts) and listens; `close()` drains
 * (health turns 503, running requests finish) and frees everything. Library users can also build the app over an
 * engine of their own with `createApp`.
 */
import { readFile } from 'node:fs/promises';
import { LorakitError } from '../errors.ts';
import { HfTokenizer, findChatTemplate } from '../io/index.ts';
import { loadModel, quantizeModel } from '../models/index.ts';
import type { QuantMode } from '../nn/index.ts';
import { type EngineOptions, type Engine, createEngine } from '../serve/index.ts';
import { type App, type AppOptions, createApp } from './app.ts';

export { createApp, type App, type AppOptions } from './app.ts';
export { HTTP_STATUS, errorBody } from './errors.ts';
export type { ServerState } from './generation.ts';

/** Options of `startServer`: the model, the engine's bounds, the app's, and where to listen. */
export interface ServerOptions
  extends Omit<EngineOptions, 'model' | 'tokenizer'>,
    Omit<AppOptions, 'engine' | 'tokenizer' | 'chatTemplate'> {
  /** A Hugging Face model folder, a hub id in the local cache, or a .gguf file (converted once, then cached). */
  model: string;
  /**
   * Keep the frozen base's Linears quantized (models/quantize.ts; default none): every row's base products run
   * through the integer kernels training uses, whatever its adapter.
   */
  quantize?: QuantMode;
  /** A Jinja chat template file for the base model (default: the model folder's). */
  chatTemplateFile?: string;
  /** Port (default 8000, as vLLM; 0: any free port) and host (default 127.0.0.1). */
  port?: number;
  host?: string;
}

/** A listening server. */
export interface RunningServer extends App {
  engine: Engine;
  /** http://host:port */
  url: string;
  /** Drains and stops: health 503, no new connections, running requests end, the model closes. */
  close(): Promise<void>;
}

/** Opens the model, builds the engine and the app, and listens. */
export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const loaded = await loadModel(o.model);
  const model = await quantizeModel(loaded, o.quantize ?? 'none').catch(async (e) => {
    await loaded.close();
    throw e;
  });
  try {
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    const chatTemplate = o.chatTemplateFile
      ? await readFile(o.chatTemplateFile, 'utf8').catch(() => {
          throw new LorakitError('LK_FILE_NOT_FOUND', `chat template file ${o.chatTemplateFile} does not exist`);
        })
      : await findChatTemplate(model.dir);
    const engine = await createEngine({ ...o, model, tokenizer });
    const app = createApp({ ...o, engine, tokenizer, chatTemplate, modelName: o.modelName ?? o.model });
    const address = await app.app.listen({ port: o.port ?? 8000, host: o.host ?? '127.0.0.1' });
    return {
      ...app,
      engine,
      url: address,
      async close() {
        app.drain();
        await app.app.close();
        await engine.close();
        await engine.parts.session.dispose();
        await model.close();
      },
    };
  } catch (e) {
    await model.close();
    throw e;
  }
}
