// SentencePiece ("llama") GGUF tokenizers against transformers' GGUF loading (interop/make_spm_gguf_fixtures.py):
// the committed tiny model (a 1,000-piece vocabulary trained on Pride and Prejudice, merges recovered from scores)
// and Llama 2's 32,000-piece vocabulary (../shared, skipped when absent) written as GGUF metadata three ways give
// transformers' ids on every text; decoding round-trips; the tiny model's logits equal transformers' to 1e-4;
// `lorakit info` names the tokenizer; a "mistral" GGUF loads as the Llama family.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Graph } from '../../src/graph/index.ts';
import { type GgufKv, GgufFile, HfTokenizer, SafetensorsFile, ggmlTypeByName, writeGguf } from '../../src/io/index.ts';
import { ggufModelFolder } from '../../src/io/gguf-model.ts';
import { mergesFromScores } from '../../src/io/gguf-spm.ts';
import { ggufTokenizerFiles } from '../../src/io/gguf-tokenizer.ts';
import { loadChatTemplate } from '../../src/io/index.ts';
import { buildCausalLM, loadModel } from '../../src/models/index.ts';
import { compile } from '../../src/runtime/index.ts';
import { LorakitError } from '../../src/errors.ts';
import { formatModelInfo, modelInfo } from '../../src/cli/info.ts';
import { SHARED_DATA, needsShared } from '../helpers.ts';
import { i64 } from '../models/helpers.ts';

const FIX = fileURLToPath(new URL('../fixtures/gguf/', import.meta.url));
const TINY = join(FIX, 'spm-tiny.gguf');
const LLAMA2 = 'tokenizers/llama2/tokenizer.json';

interface Case {
  ids: number[];
  plain: number[];
  decoded: string;
}
interface Want {
  texts: string[];
  tiny: { cases: Case[]; special: Record<string, string | null> };
  llama2: Record<'scores' | 'merges' | 'noprefix', { cases: Case[] }>;
  logits: { text: string; ids: number[] };
}
const want = async (): Promise<Want> => JSON.parse(await readFile(join(FIX, 'spm.json'), 'utf8'));

async function tokenizerOf(path: string): Promise<HfTokenizer> {
  const f = await GgufFile.open(path);
  try {
    const files = ggufTokenizerFiles(f)!;
    return HfTokenizer.fromJson(files.tokenizer, files.config);
  } finally {
    await f.close();
  }
}

/** Every text's ids (with and without BOS) equal transformers'; decoding gives transformers' text back. */
function checkCases(tok: HfTokenizer, texts: string[], cases: Case[], what: string): void {
  assert.equal(cases.length, texts.length);
  texts.forEach((text, i) => {
    const c = cases[i]!;
    const label = `${what} ${JSON.stringify(text.slice(0, 40))}`;
    assert.deepEqual(tok.encode(text), c.ids, label);
    assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), c.plain, label);
    assert.equal(tok.decode(c.plain), c.decoded, `decode: ${label}`);
    // legacy SentencePiece adds a "▁" after each special token and decodes every "▁" as a space, so only texts
    // with neither come back unchanged
    if (!/<\/?s>|<unk>|▁/.test(text)) assert.equal(tok.decode(c.plain), text, `round trip: ${label}`);
  });
}

test('gguf-spm: merges from scores rank each split by the whole piece, then by its halves', () => {
  // the list transformers' GGUFTokenizerSkeleton builds for these pieces: "abcd" (score -1) first, its splits by
  // their left half's score (ab -2, abc -6, a -9); "x🤗" has no split into two pieces (code points, not UTF-16 halves)
  const tokens = ['a', 'b', 'c', 'd', 'ab', 'cd', 'abc', 'bcd', 'abcd', '🤗', 'x🤗'];
  const scores = [-9, -9, -9, -9, -2, -5, -6, -4, -1, -9, -3];
  assert.deepEqual(mergesFromScores(tokens, scores), [
    ['ab', 'cd'],
    ['abc', 'd'],
    ['a', 'bcd'],
    ['a', 'b'],
    ['b', 'cd'],
    ['c', 'd'],
    ['ab', 'c'],
  ]);
});

test('gguf-spm: the tiny SentencePiece GGUF tokenizes as transformers does', async () => {
  const w = await want();
  const tok = await tokenizerOf(TINY);
  checkCases(tok, w.texts, w.tiny.cases, 'tiny');
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.unkTokenId, 0);
  assert.deepEqual([...tok.specialTokenIds].sort(), [0, 1, 2]); // control tokens and the named unk, bos, eos
});

test('gguf-spm: Llama 2 written as GGUF (scores, merges, no space prefix) gives transformers ids', {
  skip: needsShared(LLAMA2),
}, async () => {
  const w = await want();
  const json = JSON.parse(await readFile(join(SHARED_DATA, LLAMA2), 'utf8'));
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-spm-'));
  try {
    for (const variant of ['scores', 'merges', 'noprefix'] as const) {
      const path = join(dir, `llama2-${variant}.gguf`);
      await writeGguf(path, llama2Metadata(json, variant), []);
      const t0 = performance.now();
      const tok = await tokenizerOf(path);
      const ms = performance.now() - t0;
      checkCases(tok, w.texts, w.llama2[variant].cases, `llama2 ${variant}`);
      console.log(`gguf-spm: llama2 ${variant} tokenizer built in ${ms.toFixed(0)} ms`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('gguf-spm: a vocabulary with neither merges nor scores, and an unknown tokenizer model, are refused by field', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-spm-bad-'));
  try {
    const f = await GgufFile.open(TINY);
    const base = new Map(f.header.metadata);
    await f.close();
    const refused = async (edit: (md: Map<string, GgufKv>) => void, code: string, ...parts: string[]) => {
      const md = new Map(base);
      edit(md);
      const path = join(dir, 'bad.gguf');
      await writeGguf(path, md, []);
      await assert.rejects(tokenizerOf(path), (e: unknown) => {
        assert.ok(e instanceof LorakitError && e.code === code, String(e));
        for (const p of parts) assert.ok(e.message.includes(p), `${e.message} lacks ${p}`);
        return true;
      });
    };
    await refused((md) => md.delete('tokenizer.ggml.scores'), 'LK_FILE_INVALID', 'bad.gguf', 'tokenizer.ggml.scores');
    await refused(
      (md) => md.set('tokenizer.ggml.model', { type: 'string', value: 'bert' }),
      'LK_UNSUPPORTED',
      '"bert"',
      '"llama" (SentencePiece BPE with byte fallback)',
    );
    await refused(
      (md) => md.set('tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: [0, 1] }),
      'LK_FILE_INVALID',
      'expected 1000 entries',
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('gguf-spm: the tiny model computes transformers logits; info names its tokenizer', async () => {
  const w = await want();
  const cache = await mkdtemp(join(tmpdir(), 'lorakit-spm-models-'));
  const saved = process.env.LORAKIT_CACHE;
  process.env.LORAKIT_CACHE = cache;
  try {
    const dir = await ggufModelFolder(TINY);
    const tok = await HfTokenizer.fromDir(dir);
    assert.deepEqual(tok.encode(w.logits.text), w.logits.ids);
    assert.ok((await loadChatTemplate(dir))?.includes('[INST]'));
    const info = await modelInfo(TINY);
    assert.equal(info.gguf?.tokenizer, 'llama (SentencePiece BPE with byte fallback)');
    assert.match(formatModelInfo(info), /gguf tokenizer +llama \(SentencePiece BPE with byte fallback\)/);
    const err = await logitsError(TINY, w.logits.ids, 'logits');
    console.log(`gguf-spm: tiny SentencePiece model: max |logits - transformers| = ${err}`);
    assert.ok(err <= 1e-4, `max |logits - transformers| = ${err}`);
  } finally {
    if (saved === undefined) delete process.env.LORAKIT_CACHE;
    else process.env.LORAKIT_CACHE = saved;
    await rm(cache, { recursive: true, force: true });
  }
});

// transformers 4.57.6 cannot load a "mistral" GGUF (interop/make_spm_gguf_fixtures.py says why), so the reference is
// its logits for the same tensors under "llama": Mistral is Llama without biases, and sliding_window (4096) is longer
// than the input.
test('gguf-spm: a "mistral" GGUF is the Llama family: MistralForCausalLM with the llama file\'s logits', async () => {
  const w = await want();
  const dir = await mkdtemp(join(tmpdir(), 'lorakit-spm-mistral-'));
  const saved = process.env.LORAKIT_CACHE;
  process.env.LORAKIT_CACHE = dir;
  try {
    // the tiny file renamed: "llama.*" keys become "mistral.*", tensors dequantized to F32 in the stored row order
    const path = join(dir, 'spm-tiny-mistral.gguf');
    const f = await GgufFile.open(TINY);
    const md = new Map<string, GgufKv>();
    for (const [k, v] of f.header.metadata) if (k !== 'general.alignment') md.set(k.replace(/^llama\./, 'mistral.'), v);
    md.set('general.architecture', { type: 'string', value: 'mistral' });
    const tensors = [];
    for (const name of f.names()) {
      const data = await f.read(name);
      tensors.push({ name, type: ggmlTypeByName('F32'), dims: f.info(name).dims, data: new Uint8Array(data.buffer) });
    }
    await f.close();
    await writeGguf(path, md, tensors);
    const model = await loadModel(path);
    assert.equal(model.config.model_type, 'mistral');
    assert.deepEqual(model.config.architectures, ['MistralForCausalLM']);
    await model.close();
    const err = await logitsError(path, w.logits.ids, 'logits');
    console.log(`gguf-spm: tiny model as "mistral": max |logits - transformers| = ${err}`);
    assert.ok(err <= 1e-4, `max |logits - transformers| = ${err}`);
  } finally {
    if (saved === undefined) delete process.env.LORAKIT_CACHE;
    else process.env.LORAKIT_CACHE = saved;
    await rm(dir, { recursive: true, force: true });
  }
});

/** Max |lorakit logits - transformers' `name` logits| of GGUF `path` on `ids`. */
async function logitsError(path: string, ids: number[], name: string): Promise<number> {
  const model = await loadModel(path);
  try {
    const g = new Graph('spm-gguf');
    const input = g.input('input_ids', 'i64', [1, ids.length]);
    g.output('logits', buildCausalLM(model.context(g), { inputIds: input }).logits);
    const out = await (await compile(g, { worker: false })).run({ input_ids: i64([ids]) });
    const got = out.logits.data as Float32Array; // [1, T, V]
    const ref = await SafetensorsFile.open(join(FIX, 'spm-tiny.logits.safetensors'));
    const expected = await ref.readAs(name, 'f32');
    await ref.close();
    assert.equal(got.length, expected.length);
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - expected[i]!));
    return err;
  } finally {
    await model.close();
  }
}

/**
 * Llama 2's tokenizer.json as the GGUF metadata llama.cpp writes for a SentencePiece model; the same rules as
 * interop/make_spm_gguf_fixtures.py's `llama2_gguf` (its module doc says why the scores are -(id - 259)).
 */
function llama2Metadata(
  json: { model: { vocab: Record<string, number>; merges: (string | string[])[] } },
  variant: 'scores' | 'merges' | 'noprefix',
): Map<string, GgufKv> {
  const tokens: string[] = [];
  for (const [t, i] of Object.entries(json.model.vocab)) tokens[i] = t;
  const n = tokens.length;
  const ids = [...tokens.keys()];
  const arr = (itemType: 'string' | 'f32' | 'i32', value: (string | number)[]): GgufKv => ({
    type: 'array',
    itemType,
    value,
  });
  const u32 = (value: number): GgufKv => ({ type: 'u32', value });
  const bool = (value: boolean): GgufKv => ({ type: 'bool', value });
  const md = new Map<string, GgufKv>([
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', arr('string', tokens)],
    [
      'tokenizer.ggml.scores',
      arr(
        'f32',
        ids.map((i) => (i < 259 ? 0 : -(i - 259))),
      ),
    ],
    [
      'tokenizer.ggml.token_type',
      arr(
        'i32',
        ids.map((i) => (i === 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1)),
      ),
    ],
    ['tokenizer.ggml.bos_token_id', u32(1)],
    ['tokenizer.ggml.eos_token_id', u32(2)],
    ['tokenizer.ggml.unknown_token_id', u32(0)],
    ['tokenizer.ggml.add_bos_token', bool(true)],
    ['tokenizer.ggml.add_eos_token', bool(false)],
  ]);
  if (variant === 'merges') {
    const merges = json.model.merges.map((m) => (typeof m === 'string' ? m : m.join(' ')));
    md.set(
      'tokenizer.ggml.merges',
      arr(
        'string',
        merges.filter((m) => m.split(' ').length === 2),
      ),
    );
  }
  if (variant === 'noprefix') md.set('tokenizer.ggml.add_space_prefix', bool(false));
  assert.equal(n, 32000);
  return md;
}
