/**
 * The ONNX Runtime seam, browser side: onnxruntime-web (wasm, or WebGPU where asked), with the same exports as
 * ort.ts. A model given by path is read from the host's in-memory file system (io/host.browser.ts) and every other
 * file of its folder is handed to ORT as external data, which is how the session cache (disk-cache.ts) lays out a
 * model with file weights. Not here: where ORT's wasm files are served from (the page sets ort.env.wasm.wasmPaths).
 */
import * as ort from 'onnxruntime-web';
import { basename, dirname, join, readFileSync, readdirSync } from '../io/host.ts';

export default ort;

/** Session options, as ORT types them. */
export type OrtOptions = ort.InferenceSession.SessionOptions;

/** Creates a session from model bytes, or from a model file in the in-memory file system plus its folder's files. */
export function createSession(model: Uint8Array | string, options: OrtOptions): Promise<ort.InferenceSession> {
  if (typeof model !== 'string') return ort.InferenceSession.create(model, options);
  const dir = dirname(model);
  const externalData = readdirSync(dir)
    .filter((name) => name !== basename(model))
    .map((name) => ({ path: name, data: readFileSync(join(dir, name)) as Uint8Array }));
  return ort.InferenceSession.create(readFileSync(model) as Uint8Array, { ...options, externalData });
}
