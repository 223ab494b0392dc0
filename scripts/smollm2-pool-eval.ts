/**
 * The evaluation of the SmolLM2 pool's table: for each row (the base, an adapter folder, a merged folder) the held-out
 * loss on every task's chats — nats per assistant token, computed by the causal-LM task's own evaluator, so a cell
 * equals the `eval_loss` the Trainer logs for that adapter on that file — and the SST-2 accuracy: the greedy first
 * generated token after the chat prompt spells the start of the right label ("positive" / "negative").
 *
 * The base row is a fresh LoRA whose B is zero (the adapter a run starts from, what `eval_on_start` measures), so every
 * row runs the same graph. The model is loaded once, quantized as the runs were (int8 frozen Linears).
 *
 * Not here: the task framing (smollm2-pool-tasks.ts), the phases and the Markdown (smollm2-pool.ts).
 */
import { readFileSync } from 'node:fs';
import { chatTemplateFromConfig, encodeChat, HfTokenizer, type ChatMessage } from '../src/io/index.ts';
import { Rng } from '../src/linalg/index.ts';
import { generate, loadModel, type LoadedModel, quantizeModel } from '../src/models/index.ts';
import { adaptable, loadAdapter, PeftModel } from '../src/peft/index.ts';
import { causalLmTask } from '../src/train/index.ts';
import { loadDataset, type TokenDataset } from '../src/train/data/index.ts';
import { firstTokenCorrect, POOL_TASKS, type PoolTask, SEQ_LEN } from './smollm2-pool-tasks.ts';

/** One row of the table. */
export interface RowResult {
  /** Held-out loss per task (nats per assistant token). */
  loss: Record<PoolTask, number>;
  /** SST-2 held-out accuracy of the greedy first token. */
  sst2Accuracy: number;
  /** Wall seconds the row took (its evaluations and generation). */
  seconds: number;
}

/** Options of `evaluateRows`. */
export interface EvaluateRowsOptions {
  /** The base: a GGUF file or a Hugging Face folder. */
  model: string;
  /** [row name, adapter folder] pairs; '' is the base itself. */
  rows: [string, string][];
  /** Each task's held-out chats (JSONL of `{messages}`), as the data phase wrote them. */
  heldOut: Record<PoolTask, string>;
  /** Frozen-weight quantization, as the runs had it (default int8). */
  quantize?: 'none' | 'int8' | 'q4';
  /** Tokens per row of each task (default SEQ_LEN, the runs' seq_len). */
  seqLen?: Record<PoolTask, number>;
  /** Rows per evaluation batch (default 4, the runs' batch). */
  batchSize?: number;
  /** The LoRA config of the base row's no-op adapter (default r 8 on q/k/v/o, as the runs). */
  noOp?: Record<string, unknown>;
}

/** The user turns and labels of the SST-2 held-out chats. */
function sst2Prompts(records: { messages: ChatMessage[] }[]): { prompt: ChatMessage[]; label: string }[] {
  return records.map((r) => ({ prompt: r.messages.slice(0, -1), label: r.messages[r.messages.length - 1].content }));
}

async function sst2Accuracy(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  peft: PeftModel,
  prompts: { prompt: ChatMessage[]; label: string }[],
  template: string,
): Promise<number> {
  const inputIds = prompts.map((p) => encodeChat(tokenizer, template, p.prompt, { addGenerationPrompt: true }).ids);
  // without the key: the call releases its session, so rows with baked-in adapter constants do not pile up sessions
  const { hooks, overrides } = peft.generationAdapter();
  const r = await generate(model, tokenizer, { inputIds, maxNewTokens: 1, adapter: { hooks, overrides } });
  const right = r.rows.filter((row, i) => firstTokenCorrect(tokenizer.decode(row.tokenIds), prompts[i].label));
  return right.length / prompts.length;
}

/** Evaluates every row on every task, calling `onRow` as each row finishes (so a caller can save as it goes). */
export async function evaluateRows(o: EvaluateRowsOptions, onRow: (name: string, r: RowResult) => void): Promise<void> {
  if (o.rows.length === 0) return;
  const seqLen = o.seqLen ?? SEQ_LEN,
    batchSize = o.batchSize ?? 4;
  const model = await quantizeModel(await loadModel(o.model), o.quantize ?? 'int8');
  try {
    const tokenizer = await HfTokenizer.fromDir(model.dir);
    const template = tokenizerTemplate(tokenizer);
    const data = {} as Record<PoolTask, TokenDataset>;
    for (const t of POOL_TASKS)
      data[t] = (
        await loadDataset(o.heldOut[t], { tokenizer, seqLen: seqLen[t], format: 'chat', cacheDir: false })
      ).train;
    const sst2 = sst2Prompts(
      readFileSync(o.heldOut.sst2, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l)),
    );
    for (const [name, dir] of o.rows) {
      const t0 = performance.now();
      const peft = new PeftModel(adaptable(model));
      if (dir) await loadAdapter(peft, dir, 'default');
      else await peft.addAdapter('default', o.noOp ?? NO_OP, { seed: 0, source: 'smollm2-pool: base row' });
      const loss = {} as Record<PoolTask, number>;
      for (const t of POOL_TASKS) {
        // the Trainer's evaluator on this file: same graph, same batching, the adapter's values as inputs
        const task = causalLmTask({ model, peft, adapter: 'default', train: data[t], eval: data[t], batchSize });
        const params = new Map(Object.entries(await task.initialParams(new Rng(0))));
        loss[t] = (await task.evaluate!(params)).loss;
      }
      const sst2Acc = await sst2Accuracy(model, tokenizer, peft, sst2, template);
      onRow(name, { loss, sst2Accuracy: sst2Acc, seconds: (performance.now() - t0) / 1000 });
    }
  } finally {
    await model.close();
  }
}

/** The runs' adapter: LoRA r 8 on q/k/v/o, alpha 16 (a no-op until trained: B starts at zero). */
const NO_OP = { target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8, lora_alpha: 16, lora_dropout: 0 };

function tokenizerTemplate(tokenizer: HfTokenizer): string {
  const t = chatTemplateFromConfig(tokenizer.config as Record<string, unknown>);
  if (t === undefined) throw new Error('smollm2-pool: the model has no chat template in tokenizer_config.json');
  return t;
}
