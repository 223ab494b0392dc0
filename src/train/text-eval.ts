/**
 * Evaluating a causal LM (optionally with adapters) on text: mean token loss (natural-log cross-entropy) and
 * perplexity. A plain-text file is one document; a `.jsonl` file holds one document per `{"text": ...}` record.
 * Each document is tokenised with special tokens added as transformers' tokenizer adds them by default, then cut
 * into consecutive non-overlapping windows of `seqLen` tokens (the last one shorter). A window predicts its tokens
 * 1..len-1 from the ones before, with no context from earlier windows (positions restart at 0). The loss is the
 * mean over every predicted token of every window — what interop/eval_reference.py computes with transformers.
 * The loss is reduced inside the graph (lossEvaluator, eval.ts): only one scalar per batch leaves ONNX Runtime.
 * `evaluateRanks` runs the same evaluation with a LoRA adapter truncated to each of several ranks and reports
 * MatryoshkaLoRA's AURAC of the losses (its metrics.py: the trapezoid area under the rank–metric curve over the rank
 * span, v1 on linear ranks and v2 on log₂ ranks).
 * Not here: held-out evaluation during training (eval.ts), the datasets of training (data/).
 */
import { readFile } from '../io/host.ts';
import { LorakitError, check } from '../errors.ts';
import { Graph } from '../graph/index.ts';
import type { HfTokenizer } from '../io/tokenizer.ts';
import type { LoadedModel } from '../models/load.ts';
import { addTruncated, type PeftModel } from '../peft/index.ts';
import { causalLmLoss } from './loss.ts';
import type { ModuleHooks } from '../nn/index.ts';
import type { CompileOptions } from '../runtime/index.ts';
import { lossEvaluator, perplexity } from './eval.ts';
import type { TrainBatch } from './task.ts';

/** Options of `evaluateText`. */
export interface EvaluateTextOptions {
  /** A plain-text file (one document) or a `.jsonl` file of records with a `text` field (one document each). */
  data: string;
  /** Tokens per window (default 256, or the model's position limit when that is smaller). */
  seqLen?: number;
  /** Full windows run together per graph call (default 8). */
  batchSize?: number;
  /** Adapters to evaluate with: hooks for the graph and in-memory weights (PeftModel.generationAdapter() fits). */
  adapter?: { hooks(): ModuleHooks; overrides?: ReadonlyMap<string, Float32Array | Float64Array> };
  compile?: CompileOptions;
}

/** What `evaluateText` measured. */
export interface EvaluateTextResult {
  /** Mean negative log-likelihood per predicted token (nats). */
  loss: number;
  perplexity: number;
  /** Predicted tokens (the loss averages over these): the sum over windows of length − 1. */
  tokens: number;
  windows: number;
  documents: number;
  seqLen: number;
}

/** The documents of a data file: the whole text, or the `text` of each JSONL record (errors name file and line). */
export async function readDocuments(path: string): Promise<string[]> {
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new LorakitError('LK_FILE_NOT_FOUND', `data file ${path} does not exist`, { file: path });
    if ((e as NodeJS.ErrnoException).code === 'EISDIR')
      throw new LorakitError('LK_INVALID_ARGUMENT', `${path}: expected a text or JSONL file, found a folder`, {
        file: path,
      });
    throw e;
  }
  if (!path.endsWith('.jsonl')) return [raw];
  const docs: string[] = [];
  raw.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new LorakitError('LK_FILE_INVALID', `${path}:${i + 1}: not valid JSON (${(e as Error).message})`, {
        file: path,
        line: i + 1,
      });
    }
    const text = (rec as { text?: unknown } | null)?.text;
    if (typeof text !== 'string')
      throw new LorakitError('LK_FILE_INVALID', `${path}:${i + 1}: expected a record with a string field "text"`, {
        file: path,
        line: i + 1,
      });
    docs.push(text);
  });
  return docs;
}

/** Consecutive non-overlapping windows of `seqLen` tokens (the last one shorter); windows of one token predict nothing
 * and are left out. */
export function textWindows(ids: readonly number[], seqLen: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < ids.length; i += seqLen) {
    const w = ids.slice(i, i + seqLen);
    if (w.length >= 2) out.push(w);
  }
  return out;
}

/** Batches of equal-length windows as input_ids [B, T]; each predicts B·(T − 1) tokens. */
function batchesOf(windows: number[][], batchSize: number): TrainBatch[] {
  const byLength = new Map<number, number[][]>();
  for (const w of windows) byLength.set(w.length, [...(byLength.get(w.length) ?? []), w]);
  const batches: TrainBatch[] = [];
  for (const [T, ws] of [...byLength].sort((a, b) => b[0] - a[0])) {
    for (let i = 0; i < ws.length; i += batchSize) {
      const rows = ws.slice(i, i + batchSize),
        B = rows.length;
      const ids = BigInt64Array.from(rows.flat(), BigInt);
      batches.push({
        feeds: { input_ids: { data: ids, shape: [B, T] } },
        weight: B * (T - 1),
        next: { epoch: 0, index: batches.length + 1 },
      });
    }
  }
  return batches;
}

/** Mean token loss and perplexity of a causal LM on a text or JSONL file (see the file header for the exact rule). */
export async function evaluateText(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  options: EvaluateTextOptions,
): Promise<EvaluateTextResult> {
  const c = model.config;
  if (c.model_type === 'bert')
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `eval: ${model.dir} is a bert model, not a causal LM; eval supports gpt2, llama, mistral, qwen2`,
    );
  const maxPositions = c.model_type === 'gpt2' ? c.n_positions : c.max_position_embeddings;
  const seqLen = options.seqLen ?? Math.min(256, maxPositions);
  check(
    Number.isInteger(seqLen) && seqLen >= 2,
    'LK_INVALID_ARGUMENT',
    `seqLen must be an integer >= 2, got ${seqLen}`,
  );
  check(
    seqLen <= maxPositions,
    'LK_INVALID_ARGUMENT',
    `seqLen ${seqLen} exceeds the model's ${maxPositions} positions; use at most ${maxPositions}`,
  );
  const batchSize = options.batchSize ?? 8;
  check(
    Number.isInteger(batchSize) && batchSize >= 1,
    'LK_INVALID_ARGUMENT',
    `batchSize must be a positive integer, got ${batchSize}`,
  );

  const docs = await readDocuments(options.data);
  const windows = docs.flatMap((d) => textWindows(tokenizer.encode(d, { addSpecialTokens: true }), seqLen));
  if (windows.length === 0)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `${options.data}: no token to predict (the text gives fewer than 2 tokens)`,
      { file: options.data },
    );

  const build = () => {
    const g = new Graph('eval-text');
    const ctx = model.context(g, { hooks: options.adapter?.hooks(), overrides: options.adapter?.overrides });
    const inputIds = g.input('input_ids', 'i64', ['B', 'T']);
    // every window predicts its tokens 1..T-1 (the input ids are the aligned labels): a mean over B·(T-1) tokens
    const { loss } = causalLmLoss({ ctx, inputIds, labels: inputIds, labelsAre: 'aligned' });
    return { graph: g, loss, groups: [] };
  };
  const batches = batchesOf(windows, batchSize);
  const { loss, weight } = await lossEvaluator({ build, compileOptions: options.compile }, () => batches)(new Map());
  return {
    loss,
    perplexity: perplexity(loss),
    tokens: weight ?? 0,
    windows: windows.length,
    documents: docs.length,
    seqLen,
  };
}

/**
 * MatryoshkaLoRA's AURAC (official metrics.py): Σᵢ (tᵢ₊₁ − tᵢ)·(vᵢ + vᵢ₊₁)/2 / (t_m − t₁) over ranks t₁ < … < t_m
 * ("v1"), or the same over log₂ t ("v2": each doubling weighs the same); one rank: its value. The paper takes
 * accuracies (higher is better); over losses a lower area is better.
 */
export function aurac(values: readonly number[], ranks: readonly number[], version: 'v1' | 'v2'): number {
  check(
    values.length === ranks.length && ranks.length > 0,
    'LK_INVALID_ARGUMENT',
    `aurac: ${values.length} values for ${ranks.length} ranks; expected one value per rank, at least one`,
  );
  for (let i = 1; i < ranks.length; i++)
    check(ranks[i] > ranks[i - 1], 'LK_INVALID_ARGUMENT', `aurac: ranks must increase, got [${ranks.join(', ')}]`);
  if (ranks.length === 1) return values[0];
  const x = version === 'v1' ? [...ranks] : ranks.map(Math.log2);
  let area = 0;
  for (let i = 0; i + 1 < x.length; i++) area += ((x[i + 1] - x[i]) * (values[i] + values[i + 1])) / 2;
  return area / (x[x.length - 1] - x[0]);
}

/** What `evaluateRanks` measured. */
export interface EvaluateRanksResult {
  /** Loss and perplexity of the adapter truncated to each rank, ranks ascending. */
  ranks: { rank: number; loss: number; perplexity: number }[];
  /** AURAC of the losses (lower is better), over ranks (v1) and over log₂ ranks (v2). */
  aurac: { v1: number; v2: number };
  tokens: number;
  windows: number;
  documents: number;
  seqLen: number;
}

/**
 * `evaluateText` with adapter `name` of `peft` (a LoRA, typically trained with matryoshka or dylora) cut to each of
 * `ranks` (addTruncated: its first t components, scaled as a PEFT LoRA of rank t with the same lora_alpha), and the
 * AURAC of the losses. Ranks are sorted and must be distinct integers in 1..r.
 */
export async function evaluateRanks(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  peft: PeftModel,
  name: string,
  ranks: readonly number[],
  options: Omit<EvaluateTextOptions, 'adapter'>,
): Promise<EvaluateRanksResult> {
  const sorted = [...ranks].sort((a, b) => a - b);
  check(
    sorted.length > 0 && sorted.every((t, i) => i === 0 || t > sorted[i - 1]),
    'LK_INVALID_ARGUMENT',
    `ranks must be distinct, got [${ranks.join(', ')}]`,
  );
  const active = [...peft.activeAdapters];
  const out: EvaluateRanksResult['ranks'] = [];
  let last: EvaluateTextResult | null = null;
  try {
    for (const t of sorted) {
      const tmp = await addTruncated(peft, name, t);
      try {
        peft.setActive(tmp);
        last = await evaluateText(model, tokenizer, { ...options, adapter: peft.generationAdapter() });
        out.push({ rank: t, loss: last.loss, perplexity: last.perplexity });
      } finally {
        peft.deleteAdapter(tmp);
      }
    }
  } finally {
    peft.setActive(...active);
  }
  const losses = out.map((x) => x.loss);
  return {
    ranks: out,
    aurac: { v1: aurac(losses, sorted, 'v1'), v2: aurac(losses, sorted, 'v2') },
    tokens: last!.tokens,
    windows: last!.windows,
    documents: last!.documents,
    seqLen: last!.seqLen,
  };
}
