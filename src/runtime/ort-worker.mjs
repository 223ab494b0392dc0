// The worker thread that owns ONNX Runtime sessions: session.run blocks its thread (spec §1.1), so it runs here
// and the caller's event loop stays free. Plain JavaScript so that it loads without a TypeScript loader.
import { parentPort } from 'node:worker_threads';
import ort from 'onnxruntime-node';

const sessions = new Map();
let nextHandle = 1;

parentPort.on('message', async (msg) => {
  try {
    if (msg.type === 'create') {
      const s = await ort.InferenceSession.create(msg.model, msg.options);
      const h = nextHandle++;
      sessions.set(h, s);
      parentPort.postMessage({ id: msg.id, ok: true, handle: h });
    } else if (msg.type === 'run') {
      const s = sessions.get(msg.handle);
      const feeds = {};
      for (const [k, v] of Object.entries(msg.feeds)) feeds[k] = new ort.Tensor(v.type, v.data, v.dims);
      const out = await s.run(feeds);
      const outputs = {};
      const transfer = [];
      for (const [k, t] of Object.entries(out)) {
        outputs[k] = { type: t.type, data: t.data, dims: [...t.dims] };
        if (t.data?.buffer && !transfer.includes(t.data.buffer)) transfer.push(t.data.buffer);
      }
      // Feeds the caller moved here go back with the outputs (ORT holds no reference after the run).
      const returned = {};
      for (const k of msg.giveBack ?? []) {
        const b = msg.feeds[k]?.data?.buffer;
        if (!b) continue;
        returned[k] = b;
        if (!transfer.includes(b)) transfer.push(b);
      }
      parentPort.postMessage({ id: msg.id, ok: true, outputs, returned }, transfer);
    } else if (msg.type === 'release') {
      await sessions.get(msg.handle)?.release();
      sessions.delete(msg.handle);
      parentPort.postMessage({ id: msg.id, ok: true });
    }
  } catch (e) {
    parentPort.postMessage({ id: msg.id, ok: false, error: String(e?.message ?? e) });
  }
});
