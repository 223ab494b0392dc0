/**
 * The ONNX Runtime seam, Node side: onnxruntime-node, and how a session is created from a model's bytes or from an
 * .onnx file whose weights sit next to it (external data). Browser builds swap this file for ort.browser.ts
 * (onnxruntime-web; web/vite.config.ts resolves it). Not here: sessions and runs (backend.ts, session.ts).
 */
import ort from 'onnxruntime-node';

export default ort;

/** Session options, as onnxruntime-node types them (onnxruntime-web takes the same shape). */
export type OrtOptions = ort.InferenceSession.SessionOptions;

/** Creates a session from model bytes, or from a model file path (its external data resolved beside it). */
export function createSession(model: Uint8Array | string, options: OrtOptions): Promise<ort.InferenceSession> {
  return typeof model === 'string'
    ? ort.InferenceSession.create(model, options)
    : ort.InferenceSession.create(model, options);
}
