/**
 * The demo's Web Worker: owns ONNX Runtime (onnxruntime-web) and lorakit's DemoSession so the page stays
 * responsive while a step runs. It fetches the demo base into the in-memory file system, answers the page's
 * requests (protocol.ts), streams each step's loss back, mirrors the run folder and the adapter to OPFS so they
 * survive a reload, and packs/unpacks adapters as zip files. Not here: the page's UI (main.ts), zip format (zip.ts).
 */
import ort from '../src/runtime/ort.browser.ts';
import { hostFs } from '../src/io/host.browser.ts';
import { DemoSession } from '../src/demo/session.ts';
import { exportAdapterGguf } from '../src/peft/gguf-export.ts';
import { persistDir, restoreDir } from './opfs.ts';
import type { Reply, Request } from './protocol.ts';
import { unzipFolder, zipFolder } from './zip.ts';

const BASE = '/models/demo-base';
const RUN = '/runs/demo';
const ADAPTER = '/adapters/current';
const BASE_FILES = [
  'config.json',
  'generation_config.json',
  'model.safetensors',
  'special_tokens_map.json',
  'tokenizer.json',
  'tokenizer_config.json',
];

interface State {
  session: DemoSession | null;
  abort: AbortController | null;
}
const state: State = { session: null, abort: null };
const post = (m: Reply) => (self as unknown as Worker).postMessage(m);
const url = (p: string) => new URL(`${import.meta.env.BASE_URL}${p}`, self.location.origin).href;

async function init(req: Extract<Request, { type: 'init' }>): Promise<unknown> {
  ort.env.wasm.wasmPaths = url('ort/');
  ort.env.wasm.numThreads = req.threads;
  const fs = hostFs();
  fs.mkdir(BASE, true);
  await Promise.all(
    BASE_FILES.map(async (f) => {
      const r = await fetch(url(`demo-base/${f}`));
      if (!r.ok) throw new Error(`fetching demo-base/${f}: HTTP ${r.status}`);
      fs.write(`${BASE}/${f}`, new Uint8Array(await r.arrayBuffer()));
    }),
  );
  state.session = await DemoSession.open(BASE, {
    batch: req.batch,
    seqLen: req.seqLen,
    rank: req.rank,
    alpha: req.rank * 2,
    seed: req.seed,
    compile: { ep: req.ep },
  });
  // what survived a reload: a run folder with checkpoints, and the last saved adapter
  const restored = req.restore ? (await restoreDir(RUN)) + (await restoreDir(ADAPTER)) : 0;
  const hasAdapter = fs.exists(`${ADAPTER}/adapter_model.safetensors`);
  if (hasAdapter) await state.session.loadAdapter(ADAPTER);
  else await state.session.newAdapter();
  return {
    crossOriginIsolated: self.crossOriginIsolated,
    threads: ort.env.wasm.numThreads,
    restoredFiles: restored,
    restoredAdapter: hasAdapter,
    resumable: fs.exists(`${RUN}/latest`),
    trainableParams: state.session.trainableParams,
  };
}

async function handle(req: Request): Promise<unknown> {
  if (req.type === 'init') return init(req);
  const s = state.session;
  if (!s) throw new Error('the worker is not initialised');
  switch (req.type) {
    case 'eval':
      return s.evalLoss(req.text, req.windows);
    case 'sample':
      return s.sample(req.prompt, req.bytes, req.adapter);
    case 'train': {
      const fs = hostFs();
      if (!req.resume) {
        fs.rm(RUN, { recursive: true, force: true });
        await s.newAdapter();
      }
      fs.mkdir('/runs', true);
      state.abort = new AbortController();
      const t0 = performance.now();
      const history = await s.train(req.text, {
        steps: req.steps,
        lr: req.lr,
        outputDir: RUN,
        resume: req.resume,
        checkpointEvery: req.checkpointEvery,
        signal: state.abort.signal,
        onStep: async (r) => {
          post({ type: 'step', step: r.step, loss: r.loss, tokensPerS: r.tokens_per_s });
          if (req.checkpointEvery && r.step % req.checkpointEvery === 0) await persistDir(RUN).catch(() => {});
        },
      });
      const seconds = (performance.now() - t0) / 1000;
      fs.rm(ADAPTER, { recursive: true, force: true });
      await s.saveAdapter(ADAPTER);
      await persistDir(RUN).catch(() => {});
      await persistDir(ADAPTER).catch(() => {});
      return {
        losses: history.map((r) => r.loss),
        gradNorms: history.map((r) => r.grad_norm),
        tokensPerS: history.map((r) => r.tokens_per_s),
        seconds,
      };
    }
    case 'stop':
      state.abort?.abort();
      return null;
    case 'download':
      return zipFolder(hostFs(), ADAPTER);
    case 'downloadGguf': {
      // the same llama.cpp adapter `lorakit export --format gguf` writes, built in the in-memory file system
      const out = `${ADAPTER}.gguf`;
      await exportAdapterGguf(s.model, ADAPTER, out);
      return hostFs().read(out);
    }
    case 'loadAdapter': {
      const fs = hostFs();
      fs.rm(ADAPTER, { recursive: true, force: true });
      unzipFolder(fs, ADAPTER, req.zip);
      await s.loadAdapter(ADAPTER);
      await persistDir(ADAPTER).catch(() => {});
      return { trainableParams: s.trainableParams };
    }
  }
}

self.onmessage = async (e: MessageEvent<Request & { id: number }>) => {
  const { id } = e.data;
  try {
    const value = await handle(e.data);
    const transfer = value instanceof Uint8Array ? [value.buffer as ArrayBuffer] : [];
    (self as unknown as Worker).postMessage({ type: 'result', id, ok: true, value } satisfies Reply, transfer);
  } catch (err) {
    const m = err as Error;
    post({ type: 'result', id, ok: false, error: `${m.name}: ${m.message}` });
  }
};
