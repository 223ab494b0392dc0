/**
 * The demo page: starts the worker (worker.ts), fills the text box with Brown fiction, and wires the buttons —
 * train (or resume) with a live loss chart, samples before/after, download the adapter as a PEFT zip, load a dropped
 * adapter zip and generate with it. Settings come from the form, with URL parameters as defaults
 * (`?steps=10&batch=2&seqLen=64&threads=1&ep=webgpu`) so a test can make the run small. `window.lorakitDemo` exposes
 * the worker calls and the last results for tests. Not here: training (worker.ts), the chart (chart.ts).
 */
import { drawLossChart } from './chart.ts';
import type { Reply, Request } from './protocol.ts';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const num = (k: string, d: number) => (params.has(k) ? Number(params.get(k)) : d);

/** Results the page shows, kept for tests. */
interface Results {
  evalBefore?: number;
  evalAfter?: number;
  losses: number[];
  /** Seconds since the train request, at the end of each step (the first includes compiling the step graph). */
  stepTimes: number[];
  seconds?: number;
  sampleBefore?: string;
  sampleAfter?: string;
  generated?: string;
  init?: Record<string, unknown>;
}
const results: Results = { losses: [], stepTimes: [] };

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
let nextId = 1;
let onStep: ((m: Extract<Reply, { type: 'step' }>) => void) | null = null;
worker.onmessage = (e: MessageEvent<Reply>) => {
  const m = e.data;
  if (m.type === 'step') return onStep?.(m);
  const p = pending.get(m.id);
  pending.delete(m.id);
  if (m.ok) p?.resolve(m.value);
  else p?.reject(new Error(m.error));
};
worker.onerror = (e) => status(`worker error: ${e.message}`, true);

/** Sends one request to the worker and waits for its result. */
function call<T>(req: Request): Promise<T> {
  const id = nextId++;
  return new Promise<T>((resolve, reject) => {
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    const transfer = req.type === 'loadAdapter' ? [req.zip.buffer as ArrayBuffer] : [];
    worker.postMessage({ ...req, id }, transfer);
  });
}

function status(text: string, error = false): void {
  const s = $('status');
  s.textContent = text;
  s.dataset.state = error ? 'error' : text.startsWith('ready') || text.startsWith('done') ? 'idle' : 'busy';
}

let heldOut = '';
let corpusTrain = '';
/** The text to evaluate on: Brown's held-out fiction when training on Brown, else the last tenth of the text. */
function evalText(text: string): string {
  if (text === corpusTrain) return heldOut;
  return text.slice(Math.floor(text.length * 0.9));
}
function trainText(text: string): string {
  return text === corpusTrain ? text : text.slice(0, Math.floor(text.length * 0.9));
}

const busy = (on: boolean) => {
  for (const b of document.querySelectorAll<HTMLButtonElement>('button[data-busy]')) b.disabled = on;
  $<HTMLButtonElement>('stop').disabled = !on;
};

async function runTraining(resume: boolean): Promise<void> {
  busy(true);
  try {
    const text = $<HTMLTextAreaElement>('text').value;
    const windows = Number($<HTMLInputElement>('windows').value);
    const prompt = $<HTMLInputElement>('prompt').value;
    const bytes = Number($<HTMLInputElement>('bytes').value);
    if (!resume) {
      results.losses = [];
      results.stepTimes = [];
      status('measuring the held-out loss before training…');
      results.evalBefore = await call<number>({ type: 'eval', text: evalText(text), windows });
      $('eval-before').textContent = results.evalBefore.toFixed(4);
      results.sampleBefore = await call<string>({ type: 'sample', prompt, bytes, adapter: false });
      $('before').textContent = prompt + results.sampleBefore;
    }
    const steps = Number($<HTMLInputElement>('steps').value);
    const t0 = performance.now();
    onStep = (m) => {
      results.losses[m.step - 1] = m.loss;
      results.stepTimes[m.step - 1] = (performance.now() - t0) / 1000;
      drawLossChart($<HTMLCanvasElement>('chart'), results.losses, steps);
      status(`training: step ${m.step}/${steps}, loss ${m.loss.toFixed(4)}, ${Math.round(m.tokensPerS)} tokens/s`);
    };
    status('compiling the training step…');
    const r = await call<{ losses: number[]; seconds: number }>({
      type: 'train',
      text: trainText(text),
      steps,
      lr: Number($<HTMLInputElement>('lr').value),
      resume,
      checkpointEvery: 10,
    });
    results.seconds = r.seconds;
    status('measuring the held-out loss after training…');
    results.evalAfter = await call<number>({ type: 'eval', text: evalText(text), windows });
    $('eval-after').textContent = results.evalAfter.toFixed(4);
    results.sampleAfter = await call<string>({ type: 'sample', prompt, bytes, adapter: true });
    $('after').textContent = prompt + results.sampleAfter;
    status(`done: ${r.losses.length} steps in ${r.seconds.toFixed(1)} s`);
  } catch (e) {
    status(`error: ${(e as Error).message}`, true);
  } finally {
    busy(false);
  }
}

async function download(): Promise<void> {
  const zip = await call<Uint8Array>({ type: 'download' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([zip as Uint8Array<ArrayBuffer>], { type: 'application/zip' }));
  a.download = 'lorakit-demo-adapter.zip';
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function downloadGguf(): Promise<void> {
  const bytes = await call<Uint8Array>({ type: 'downloadGguf' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' }));
  a.download = 'lorakit-demo-adapter.gguf';
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

async function loadAdapterFile(file: File): Promise<void> {
  busy(true);
  try {
    status(`loading adapter ${file.name}…`);
    const r = await call<{ trainableParams: number }>({
      type: 'loadAdapter',
      zip: new Uint8Array(await file.arrayBuffer()),
    });
    status(`ready: adapter ${file.name} loaded (${r.trainableParams.toLocaleString('en-US')} parameters)`);
  } catch (e) {
    status(`error: ${(e as Error).message}`, true);
  } finally {
    busy(false);
  }
}

async function generateWithAdapter(): Promise<void> {
  busy(true);
  try {
    const prompt = $<HTMLInputElement>('prompt').value;
    results.generated = await call<string>({
      type: 'sample',
      prompt,
      bytes: Number($<HTMLInputElement>('bytes').value),
      adapter: true,
    });
    $('generated').textContent = prompt + results.generated;
    status('ready');
  } catch (e) {
    status(`error: ${(e as Error).message}`, true);
  } finally {
    busy(false);
  }
}

async function start(): Promise<void> {
  for (const k of ['steps', 'lr', 'windows', 'bytes'] as const)
    if (params.has(k)) $<HTMLInputElement>(k).value = params.get(k)!;
  busy(true);
  $<HTMLButtonElement>('stop').disabled = true;
  status('loading the demo base and Brown fiction…');
  const corpus = (await (await fetch(`${import.meta.env.BASE_URL}brown-fiction.json`)).json()) as {
    train: string;
    heldOut: string;
  };
  corpusTrain = corpus.train;
  heldOut = corpus.heldOut;
  $<HTMLTextAreaElement>('text').value = corpus.train;
  const threads = num('threads', Math.min(4, navigator.hardwareConcurrency || 1));
  results.init = await call<Record<string, unknown>>({
    type: 'init',
    threads,
    ep: params.get('ep') === 'webgpu' ? 'webgpu' : 'cpu',
    batch: num('batch', 4),
    seqLen: num('seqLen', 128),
    rank: num('rank', 8),
    seed: num('seed', 0),
    restore: params.get('restore') !== '0',
  });
  const i = results.init;
  $('env').textContent =
    `cross-origin isolated: ${i.crossOriginIsolated}; wasm threads: ${i.threads}; ` +
    `backend: ${params.get('ep') === 'webgpu' ? 'WebGPU' : 'wasm'}; LoRA parameters: ${i.trainableParams}` +
    (i.restoredFiles ? `; restored ${i.restoredFiles} files from OPFS` : '');
  $<HTMLButtonElement>('resume').hidden = !i.resumable;
  busy(false);
  status('ready');
}

$('train').onclick = () => void runTraining(false);
$('resume').onclick = () => void runTraining(true);
$('stop').onclick = () => void call({ type: 'stop' });
$('download').onclick = () => void download();
$('download-gguf').onclick = () => void downloadGguf();
$('generate').onclick = () => void generateWithAdapter();
$<HTMLInputElement>('adapter-file').onchange = (e) => {
  const f = (e.target as HTMLInputElement).files?.[0];
  if (f) void loadAdapterFile(f);
};
const textBox = $<HTMLTextAreaElement>('text');
textBox.ondragover = (e) => e.preventDefault();
textBox.ondrop = (e) => {
  // a dropped text file replaces the training text
  const f = e.dataTransfer?.files[0];
  if (!f) return;
  e.preventDefault();
  void f.text().then((t) => {
    textBox.value = t;
  });
};
const drop = $('drop');
drop.ondragover = (e) => e.preventDefault();
drop.ondrop = (e) => {
  e.preventDefault();
  const f = e.dataTransfer?.files[0];
  if (f) void loadAdapterFile(f);
};

(window as unknown as { lorakitDemo: unknown }).lorakitDemo = { call, results, ready: start() };
