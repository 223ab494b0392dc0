/**
 * The four tasks of the SmolLM2 composition pool (issue 16, part 1), framed as chat records `{messages: [user,
 * assistant]}` so that a run renders them with SmolLM2-Instruct's own ChatML template and takes the loss on the
 * assistant's tokens only: Alpaca (instruction, + input → output), GSM8K (question → the worked answer), Code Alpaca
 * (instruction, + input → code) and SST-2 (a sentence and the question → "positive" / "negative").
 *
 * Each task reads its files from ../shared/data (licences there; nothing is copied into the repository) and splits
 * them into training records and a fixed held-out set that no adapter trains on: the last HELD_OUT records of the
 * Alpaca-style files (as examples/smollm2-chat does), the first HELD_OUT of GSM8K's test split and of SST-2's dev split.
 *
 * Not here: the runs, the table and the merges (scripts/smollm2-pool.ts). The framing functions are pure so that
 * test/scripts/smollm2-pool-tasks.test.ts checks them on a few records.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The shared data folder (../shared/data beside the repository). */
export const SHARED_DATA = resolve(import.meta.dirname, '..', '..', 'shared', 'data');
/** The shared SmolLM2-135M-Instruct GGUF (Q4_1; dequantized on load, then int8 per the run config). */
export const MODEL = join(SHARED_DATA, 'models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf');
/** Where the pool's data, adapters, merges and tables live. */
export const POOL_DIR = resolve(import.meta.dirname, '..', 'runs', 'smollm2-pool');
/**
 * Training records written per task: the first ones of its training split (a run of 24 × 4 sees 96 of them; more
 * only slows tokenizing). Records after these are unseen by the pool's adapters.
 */
export const TRAIN_RECORDS = 2000;

/** The pool's tasks, in table order. */
export const POOL_TASKS = ['alpaca', 'gsm8k', 'code_alpaca', 'sst2'] as const;
/** One of the pool's tasks. */
export type PoolTask = (typeof POOL_TASKS)[number];
/** Held-out records per task (fixed: the same ones for every adapter and merge). */
export const HELD_OUT = 64;
/**
 * Tokens per row of each task (SmolLM2's tokenizer, its default system turn included): 128 as examples/smollm2-chat,
 * except GSM8K at 256: its held-out prompts reach 158 tokens and its chats' median is 218, so at 128 most rows would
 * hold no answer token. At 128, 14 of Alpaca's 64 held-out chats and 22 of Code Alpaca's are cut short (the loss is
 * then on their first tokens) and 3 Code Alpaca prompts fill the row (those rows are dropped); 256 for Code Alpaca
 * would double its share of this loaded machine's time.
 */
export const SEQ_LEN: Record<PoolTask, number> = { alpaca: 128, gsm8k: 256, code_alpaca: 128, sst2: 128 };

/** Where each task's adapter lands (the Trainer's `final` folder of its run). */
export const adapterDir = (t: PoolTask): string => join(POOL_DIR, t, 'run', 'final');

/** A chat record as the `chat` data format reads it. */
export interface ChatRecord {
  messages: { role: 'user' | 'assistant'; content: string }[];
}

/** An Alpaca-style record (Alpaca and Code Alpaca share the fields). */
export interface InstructionRecord {
  instruction: string;
  input?: string;
  output: string;
}

const turn = (user: string, assistant: string): ChatRecord => ({
  messages: [
    { role: 'user', content: user },
    { role: 'assistant', content: assistant },
  ],
});

/** Alpaca / Code Alpaca: the instruction, then the input after a blank line when there is one (what a person types). */
export function instructionChat(r: InstructionRecord): ChatRecord {
  const input = r.input?.trim();
  return turn(input ? `${r.instruction}\n\n${input}` : r.instruction, r.output);
}

/** GSM8K: the question → the dataset's worked answer verbatim (calculator notes `<<…>>` and the `#### n` line kept). */
export function gsm8kChat(r: { question: string; answer: string }): ChatRecord {
  return turn(r.question, r.answer);
}

/** The SST-2 question after the sentence; the answer is one word so that its first token decides accuracy. */
export const SST2_QUESTION = 'Is the sentiment positive or negative?';
/** SST-2's labels as words (GLUE: 0 negative, 1 positive). */
export const SST2_LABELS = ['negative', 'positive'] as const;

/** SST-2: "Sentence: … \n Is the sentiment positive or negative?" → "positive" / "negative". */
export function sst2Chat(sentence: string, label: 0 | 1): ChatRecord {
  return turn(`Sentence: ${sentence.trim()}\n${SST2_QUESTION}`, SST2_LABELS[label]);
}

/**
 * SST-2 accuracy's rule: the greedy first generated token, decoded and trimmed, is a non-empty prefix of the right
 * label and of no other ("pos" counts for "positive"; an empty piece or "the" counts as wrong).
 */
export function firstTokenCorrect(piece: string, label: string): boolean {
  const p = piece.trim().toLowerCase();
  return p !== '' && label.startsWith(p) && SST2_LABELS.filter((l) => l.startsWith(p)).length === 1;
}

/**
 * Parses the first `limit` rows of an SST-2 TSV (header `sentence\tlabel`); a row whose label is not 0 or 1 is an
 * error naming its line.
 */
export function parseSst2(
  tsv: string,
  file: string,
  limit = Number.POSITIVE_INFINITY,
): { sentence: string; label: 0 | 1 }[] {
  const lines = tsv.split('\n').filter((l) => l.trim() !== '');
  if (lines[0]?.trim() !== 'sentence\tlabel') throw new Error(`${file}: expected the header "sentence<TAB>label"`);
  return lines.slice(1, 1 + Math.min(limit, lines.length)).map((l, i) => {
    const tab = l.lastIndexOf('\t');
    const label = l.slice(tab + 1).trim();
    if (tab < 0 || (label !== '0' && label !== '1'))
      throw new Error(`${file} line ${i + 2}: expected "sentence<TAB>0|1", found ${JSON.stringify(l.slice(0, 60))}`);
    return { sentence: l.slice(0, tab), label: label === '1' ? 1 : 0 };
  });
}

/** A task's training records and its fixed held-out records, as chats. */
export interface TaskSplit {
  train: ChatRecord[];
  heldOut: ChatRecord[];
}

const jsonl = (file: string, limit: number) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(0, limit)
    .map((l) => JSON.parse(l));

/**
 * Reads and frames one task from the shared data folder (`dataDir` is ../shared/data): at most `trainLimit` training
 * records (the first ones; a short run sees a few dozen) and the fixed held-out set.
 */
export function readTask(task: PoolTask, dataDir: string, trainLimit = Number.POSITIVE_INFINITY): TaskSplit {
  if (task === 'alpaca' || task === 'code_alpaca') {
    const file =
      task === 'alpaca'
        ? join(dataDir, 'alpaca/alpaca_5000.json')
        : join(dataDir, 'code_alpaca_2k/code_alpaca_2k.json');
    const all = (JSON.parse(readFileSync(file, 'utf8')) as InstructionRecord[]).map(instructionChat);
    return {
      train: all.slice(0, Math.min(trainLimit, all.length - HELD_OUT)),
      heldOut: all.slice(all.length - HELD_OUT),
    };
  }
  if (task === 'gsm8k') {
    return {
      train: jsonl(join(dataDir, 'gsm8k/train.jsonl'), trainLimit).map(gsm8kChat),
      heldOut: jsonl(join(dataDir, 'gsm8k/test.jsonl'), HELD_OUT).map(gsm8kChat),
    };
  }
  const rows = (f: string, limit: number) =>
    parseSst2(readFileSync(join(dataDir, f), 'utf8'), f, limit).map((r) => sst2Chat(r.sentence, r.label));
  return { train: rows('sst2/train.tsv', trainLimit), heldOut: rows('sst2/dev.tsv', HELD_OUT) };
}
