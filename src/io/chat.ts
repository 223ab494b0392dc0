/**
 * Chat templates: finding a model's Jinja chat template, rendering a conversation with @huggingface/jinja (the
 * same trim_blocks/lstrip_blocks settings as transformers' apply_chat_template), and tokenising a conversation
 * with a mask of the assistant tokens, for training with the loss on assistant turns only.
 * Not here: tokenisation itself (`tokenizer.ts`), batching or loss masking (`train/`).
 */
import { join, readFile } from './host.ts';
import { Template } from '@huggingface/jinja';
import { LorakitError } from '../errors.ts';
import { exists, readJsonFile } from './config.ts';
import { tokenContent, type HfTokenizer } from './tokenizer.ts';

/** One chat message; extra fields (tool_calls, reasoning_content, ...) reach the template as they are. */
export interface ChatMessage {
  role: string;
  content: string;
  [field: string]: unknown;
}

/** Options of `renderChat`; any other key becomes a template variable as it is (`tools`, `enable_thinking`, ...). */
export interface RenderChatOptions {
  /** End with the header of an assistant turn, ready for generation (default false). */
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  [variable: string]: unknown;
}

/** Options of `encodeChat`. */
export interface EncodeChatOptions extends RenderChatOptions {
  /** Token strings that close an assistant turn and are masked in with it (default: common ones plus the eos token). */
  endOfTurnTokens?: string[];
}

/** A tokenised conversation: `assistantMask[i]` is 1 where `ids[i]` was written by an assistant message. */
export interface ChatEncoding {
  text: string;
  ids: number[];
  assistantMask: number[];
}

/** Tokens that end a turn in common templates (Llama-3, ChatML/Qwen, Phi-3, Gemma, Llama-2, GPT-2). */
const END_OF_TURN = [
  '<|eot_id|>',
  '<|eom_id|>',
  '<|im_end|>',
  '<|end|>',
  '<end_of_turn>',
  '</s>',
  '<|endoftext|>',
  '<|end_of_text|>',
];

const compiled = new Map<string, Template>();

function compile(template: string): Template {
  let t = compiled.get(template);
  if (t === undefined) {
    try {
      t = new Template(template);
    } catch (e) {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `chat template: cannot parse the template: ${(e as Error).message}`,
      );
    }
    if (compiled.size >= 16) compiled.delete(compiled.keys().next().value!);
    compiled.set(template, t);
  }
  return t;
}

/** Renders `messages` with a Jinja chat template, as transformers' `apply_chat_template(tokenize=False)` does. */
export function renderChat(
  template: string,
  messages: readonly ChatMessage[],
  options: RenderChatOptions = {},
): string {
  if (typeof template !== 'string' || template === '') {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `renderChat: template must be a non-empty string, got ${template === '' ? 'an empty string' : typeof template}`,
    );
  }
  checkMessages(messages, 'renderChat');
  const { addGenerationPrompt = false, bosToken, eosToken, ...extra } = options;
  const vars: Record<string, unknown> = { ...extra, messages, add_generation_prompt: addGenerationPrompt };
  if (bosToken !== undefined) vars.bos_token = bosToken;
  if (eosToken !== undefined) vars.eos_token = eosToken;
  try {
    return compile(template).render(vars);
  } catch (e) {
    throw new LorakitError('LK_INVALID_ARGUMENT', `chat template: rendering failed: ${(e as Error).message}`);
  }
}

function checkMessages(messages: readonly ChatMessage[], fn: string): void {
  if (!Array.isArray(messages))
    throw new LorakitError('LK_INVALID_ARGUMENT', `${fn}: messages must be an array, got ${typeof messages}`);
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string') {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `${fn}: messages[${i}] must be an object with a string "role", got ${JSON.stringify(m)}`,
      );
    }
  });
}

/**
 * The chat template in a parsed tokenizer_config.json: `chat_template` is a string, or a list of
 * `{name, template}` from which `name` (default "default") is taken. Undefined when there is none.
 */
export function chatTemplateFromConfig(
  tokenizerConfig: Record<string, unknown>,
  { name = 'default', source = 'tokenizer_config.json' } = {},
): string | undefined {
  const t = tokenizerConfig.chat_template;
  if (t === undefined || t === null) return undefined;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const entry = t.find((e) => typeof e === 'object' && e !== null && e.name === name);
    if (entry === undefined || typeof entry.template !== 'string') {
      const names = t.map((e) => JSON.stringify(e?.name)).join(', ');
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: field "chat_template" has no template named "${name}"; it has ${names || 'none'}`,
      );
    }
    return entry.template;
  }
  throw new LorakitError(
    'LK_CONFIG_INVALID',
    `${source}: field "chat_template" expected a string or a list of {name, template}, got ${typeof t}`,
  );
}

/**
 * The chat template of a Hugging Face folder, looked up as transformers does: chat_template.jinja, then
 * tokenizer_config.json "chat_template", then chat_template.json. Undefined when there is none.
 */
export async function findChatTemplate(dir: string, { name = 'default' } = {}): Promise<string | undefined> {
  const jinja = join(dir, 'chat_template.jinja');
  if (await exists(jinja)) return readFile(jinja, 'utf8');
  const configPath = join(dir, 'tokenizer_config.json');
  if (await exists(configPath)) {
    const t = chatTemplateFromConfig((await readJsonFile(configPath)) as Record<string, unknown>, {
      name,
      source: configPath,
    });
    if (t !== undefined) return t;
  }
  const json = join(dir, 'chat_template.json');
  if (await exists(json))
    return chatTemplateFromConfig((await readJsonFile(json)) as Record<string, unknown>, { name, source: json });
  return undefined;
}

/** Like `findChatTemplate`, but a missing template is an LK_FILE_NOT_FOUND error that says where it looked. */
export async function loadChatTemplate(dir: string, options: { name?: string } = {}): Promise<string> {
  const t = await findChatTemplate(dir, options);
  if (t === undefined) {
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${dir}: no chat template; looked for chat_template.jinja, "chat_template" in tokenizer_config.json, and ` +
        `chat_template.json`,
      { path: dir },
    );
  }
  return t;
}

/**
 * Renders and tokenises a conversation (without adding special tokens: the template writes them, as in
 * transformers' apply_chat_template) and marks the tokens each assistant message wrote: its content and the
 * end-of-turn token right after it (`<|eot_id|>`, `<|im_end|>`, ...), which the model must learn to emit.
 *
 * Each assistant reply starts where the conversation before it, rendered with a generation prompt, stops matching
 * the full text; its content is looked up from there. Character spans become token spans by tokenising prefixes
 * of the text, so a token that mixes template text and content counts as content. Template scaffolding around the
 * content (headers, an empty `<think></think>` block) is not masked in.
 */
export function encodeChat(
  tokenizer: HfTokenizer,
  template: string,
  messages: readonly ChatMessage[],
  options: EncodeChatOptions = {},
): ChatEncoding {
  checkMessages(messages, 'encodeChat');
  const { endOfTurnTokens, ...renderOptions } = options;
  const vars: RenderChatOptions = { ...specialTokenVariables(tokenizer), ...renderOptions };
  const text = renderChat(template, messages, vars);
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  const assistantMask = new Array<number>(ids.length).fill(0);
  const eos = tokenContent(tokenizer.config.eos_token);
  const ends = endOfTurnTokens ?? (eos === undefined ? END_OF_TURN : [...END_OF_TURN, eos]);
  const tokensBefore = (pos: number) =>
    commonPrefixLength(tokenizer.encode(text.slice(0, pos), { addSpecialTokens: false }), ids);
  let cursor = 0;
  messages.forEach((m, k) => {
    if (m.role !== 'assistant') return;
    if (typeof m.content !== 'string') {
      throw new LorakitError(
        'LK_INVALID_ARGUMENT',
        `encodeChat: messages[${k}].content must be a string, got ${typeof m.content}`,
      );
    }
    const prompt = renderChat(template, messages.slice(0, k), { ...vars, addGenerationPrompt: true });
    const from = Math.max(cursor, commonPrefixLength(prompt, text));
    let start = text.indexOf(m.content, from);
    let content = m.content;
    if (start < 0 && m.content.trim() !== m.content) {
      content = m.content.trim();
      start = text.indexOf(content, from);
    }
    if (start < 0) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `encodeChat: the content of messages[${k}] (assistant) does not appear in the rendered chat after position ` +
          `${from}; the template rewrites it, so its tokens cannot be masked`,
      );
    }
    let end = start + content.length;
    const after = /^[ \t]*/.exec(text.slice(end))![0].length;
    const closing = ends.find((t) => text.startsWith(t, end + after));
    if (closing !== undefined) end += after + closing.length;
    cursor = end;
    if (end === start) return;
    const first = tokensBefore(start);
    const upTo = tokenizer.encode(text.slice(0, end), { addSpecialTokens: false });
    const common = commonPrefixLength(upTo, ids);
    // A last token that runs past `end` (content merged with the text after it) still counts as content.
    const last = common === upTo.length ? common : common + 1;
    for (let i = first; i < Math.min(last, ids.length); i++) assistantMask[i] = 1;
  });
  return { text, ids, assistantMask };
}

/** bos_token, eos_token, ... of a tokenizer as template variables (transformers passes its special tokens map). */
function specialTokenVariables(tokenizer: HfTokenizer): RenderChatOptions {
  const vars: RenderChatOptions = {};
  const bos = tokenContent(tokenizer.config.bos_token),
    eos = tokenContent(tokenizer.config.eos_token);
  if (bos !== undefined) vars.bosToken = bos;
  if (eos !== undefined) vars.eosToken = eos;
  for (const field of ['unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
    const v = tokenContent(tokenizer.config[field]);
    if (v !== undefined) vars[field] = v;
  }
  return vars;
}

function commonPrefixLength<T extends string | readonly number[]>(a: T, b: T): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
