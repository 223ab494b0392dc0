/**
 * Messages between the demo page (main.ts) and its worker (worker.ts): each request carries an id and is answered
 * by one `result` with that id; `step` messages stream during training. Not here: what the worker does with them.
 */

/** What the page asks. */
export type Request =
  | {
      type: 'init';
      threads: number;
      ep: 'cpu' | 'webgpu';
      batch: number;
      seqLen: number;
      rank: number;
      seed: number;
      /** Restore the run folder and adapter saved in OPFS by an earlier visit. */
      restore: boolean;
    }
  | { type: 'eval'; text: string; windows: number }
  | { type: 'sample'; prompt: string; bytes: number; adapter: boolean }
  | { type: 'train'; text: string; steps: number; lr: number; resume: boolean; checkpointEvery?: number }
  | { type: 'stop' }
  | { type: 'download' }
  | { type: 'downloadGguf' }
  | { type: 'loadAdapter'; zip: Uint8Array };

/** What the worker answers. */
export type Reply =
  | { type: 'result'; id: number; ok: true; value: unknown }
  | { type: 'result'; id: number; ok: false; error: string }
  | { type: 'step'; step: number; loss: number; tokensPerS: number };
