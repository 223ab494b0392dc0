/**
 * What a run shows and records while it trains: `metrics.jsonl` (one JSON object per optimizer step), the sample
 * generations of each evaluation (`samples/step-<N>.jsonl`), notices (resumed from a checkpoint, data warnings) and
 * progress output — a cli-progress bar on a terminal, a plain line every N steps otherwise (logs, CI, pipes).
 * Not here: the loss plot (`plot.ts`), checkpoints.
 */
import { appendFile, join, mkdir, standardOutput } from '../io/host.ts';
import type { Writable } from 'node:stream';
import cliProgress from 'cli-progress';
import { writeFileAtomic } from '../io/index.ts';
import type { TaskSample } from './task.ts';

/** One line of metrics.jsonl. Times are seconds; `tokens` counts all tokens seen so far, `tokens_per_s` this step's
 * rate. */
export interface StepRecord {
  step: number;
  /** Fractional epoch after this step (when the task knows its batches per epoch). */
  epoch?: number;
  loss: number;
  lr: number;
  grad_norm: number;
  tokens: number;
  tokens_per_s: number;
  elapsed: number;
  eval_loss?: number;
  eval_ppl?: number;
  /** The task's own metrics, averaged over micro-batches. */
  [metric: string]: number | undefined;
}

/** The metrics file of a run; `reset` rewrites it from a checkpoint's history, so a resumed run has no stray lines. */
export class MetricsLog {
  constructor(readonly path: string) {}

  /** Replaces the file with `records` (atomically). */
  async reset(records: readonly StepRecord[]): Promise<void> {
    await writeFileAtomic(this.path, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  }

  /** Appends one record. */
  async append(record: StepRecord): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(record)}\n`);
  }
}

/** The folder of a run's sample generations, inside its output folder. */
export const SAMPLES_DIR = 'samples';

/** Writes the samples of the evaluation at `step` as `<outputDir>/samples/step-<step>.jsonl` (atomically). */
export async function writeSamples(outputDir: string, step: number, samples: readonly TaskSample[]): Promise<string> {
  const dir = join(outputDir, SAMPLES_DIR);
  await mkdir(dir, { recursive: true });
  const file = join(dir, `step-${step}.jsonl`);
  await writeFileAtomic(file, samples.map((s) => `${JSON.stringify({ step, ...s })}\n`).join(''));
  return file;
}

/** A message about the run for its user: `info` (resumed from a checkpoint) or `warning` (data, changed settings). */
export interface Notice {
  level: 'info' | 'warning';
  message: string;
}

/** Where notices go: `onNotice` when given, else the progress stream (warnings prefixed) unless progress is 'none'. */
export function noticeSink(o: {
  onNotice?: (notice: Notice) => void;
  progress?: ProgressMode;
  progressStream?: Writable;
}): (notice: Notice) => void {
  if (o.onNotice) return o.onNotice;
  if (o.progress === 'none') return () => {};
  const stream = o.progressStream ?? standardOutput();
  return (n) => stream.write(`${n.level === 'warning' ? 'warning: ' : ''}${n.message}\n`);
}

/** How progress is shown: `auto` is `bar` when the stream is a terminal and `lines` otherwise. */
export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';

/** Seconds as `1h02m`, `3m05s` or `12s`. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600),
    m = Math.floor((t % 3600) / 60),
    sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** A rate as `950`, `12.3k` or `1.20M`. */
export function formatRate(x: number): string {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0);
}

/** Progress output of one run. */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private readonly mode: 'bar' | 'lines' | 'none';
  private startStep = 0;
  private startTime = 0;
  private lastEval = '';

  constructor(
    mode: ProgressMode,
    private readonly total: number,
    private readonly stream: Writable & { isTTY?: boolean } = standardOutput(),
    private readonly every = 10,
  ) {
    this.mode = mode === 'auto' ? (stream.isTTY ? 'bar' : 'lines') : mode;
  }

  /** Starts at `step` (non-zero when resuming). */
  start(step: number): void {
    this.startStep = step;
    this.startTime = performance.now();
    if (this.mode !== 'bar') return;
    this.bar = new cliProgress.SingleBar(
      {
        stream: this.stream,
        format: 'step {value}/{total} {bar} loss {loss}{eval} | {tps} tok/s | ETA {eta_formatted}',
        hideCursor: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(this.total, step, { loss: '-', eval: '', tps: '-' });
  }

  /** Shows one finished step. */
  update(r: StepRecord): void {
    if (r.eval_loss !== undefined) this.lastEval = ` (eval ${r.eval_loss.toFixed(4)})`;
    if (this.mode === 'bar') {
      this.bar?.update(r.step, { loss: r.loss.toFixed(4), eval: this.lastEval, tps: formatRate(r.tokens_per_s) });
    } else if (
      this.mode === 'lines' &&
      (r.step % this.every === 0 || r.step === this.total || r.eval_loss !== undefined)
    ) {
      const done = r.step - this.startStep;
      const eta = done > 0 ? ((performance.now() - this.startTime) / 1000 / done) * (this.total - r.step) : NaN;
      const evalPart =
        r.eval_loss !== undefined ? ` eval_loss ${r.eval_loss.toFixed(4)} eval_ppl ${r.eval_ppl!.toPrecision(4)}` : '';
      this.stream.write(
        `step ${r.step}/${this.total} loss ${r.loss.toFixed(4)} lr ${r.lr.toExponential(2)} grad_norm ` +
          `${r.grad_norm.toPrecision(3)}` +
          `${evalPart} ${formatRate(r.tokens_per_s)} tok/s ETA ${formatDuration(eta)}\n`,
      );
    }
  }

  /** A message outside the bar (checkpoint written, early stop). */
  note(message: string): void {
    if (this.mode === 'lines') this.stream.write(`${message}\n`);
  }

  /** Ends the output (leaves the bar's last state on screen). */
  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
