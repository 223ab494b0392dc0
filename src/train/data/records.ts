/**
 * Dataset files to records: parses a .txt, .json (array) or .jsonl file, detects or applies the record format,
 * maps column names, and validates every record with zod. A bad record becomes a `RecordProblem` that names the
 * file, the JSONL line or JSON array index, the field and what is wrong; whole-file problems (not JSON, empty,
 * unknown format) throw LK_FILE_INVALID at once. Not here: tokenisation (`encode.ts`), batching (`rows.ts`).
 */
import { basename, extname } from '../../io/host.ts';
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { ChatMessage } from '../../io/chat.ts';

/**
 * Record formats: `plain` a whole text file as one document; `text` records `{text}`; `prompt-completion`
 * `{prompt, completion}`; `alpaca` `{instruction, input?, output}`; `chat` `{messages: [{role, content}]}`
 * (ShareGPT `{conversations: [{from, value}]}` is read as chat too).
 */
export type DatasetFormat = 'plain' | 'text' | 'prompt-completion' | 'alpaca' | 'chat';

/** The format names, in the order auto-detection tries them. */
export const DATASET_FORMATS: readonly DatasetFormat[] = ['chat', 'alpaca', 'prompt-completion', 'text', 'plain'];

/** Column names of the file for each canonical field (e.g. `{prompt: 'question', completion: 'answer'}` for GSM8K). */
export interface FieldMap {
  text?: string;
  prompt?: string;
  completion?: string;
  instruction?: string;
  input?: string;
  output?: string;
  messages?: string;
  role?: string;
  content?: string;
}

/** Where a record is: the JSONL line (1-based) or the JSON array index. */
export interface RecordLocation {
  file: string;
  line?: number;
  index?: number;
}

/** A malformed record: where it is and what is wrong with it. */
export interface RecordProblem extends RecordLocation {
  message: string;
}

/** A validated record in canonical form and where it came from (Alpaca records become prompt/completion pairs). */
export type DataRecord = (
  | { kind: 'plain'; text: string }
  | { kind: 'text'; text: string }
  | { kind: 'pair'; prompt: string; completion: string }
  | { kind: 'chat'; messages: ChatMessage[] }
) & { where: RecordLocation };

/** The Stanford Alpaca prompt templates (tatsu-lab/stanford_alpaca train.py `PROMPT_DICT`), with and without input. */
export const ALPACA_PROMPT = {
  withInput:
    'Below is an instruction that describes a task, paired with an input that provides further context. ' +
    'Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### ' +
    'Input:\n{input}\n\n### Response:\n',
  noInput:
    'Below is an instruction that describes a task. ' +
    'Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n',
} as const;

/** The Alpaca prompt of an instruction and an optional input (an empty or blank input uses the no-input template). */
export function alpacaPrompt(instruction: string, input = ''): string {
  const template = input.trim() === '' ? ALPACA_PROMPT.noInput : ALPACA_PROMPT.withInput;
  // A function replacement, so "$&" in the data is not a replacement pattern.
  return template.replace('{instruction}', () => instruction).replace('{input}', () => input);
}

/** The records of a file, the problems found, and the format used. */
export interface ParsedFile {
  format: DatasetFormat;
  records: DataRecord[];
  problems: RecordProblem[];
}

/** "data.jsonl:12" or "data.json [12]": the place a message points at. */
export function formatLocation(where: RecordLocation): string {
  return where.line !== undefined
    ? `${where.file}:${where.line}`
    : where.index !== undefined
      ? `${where.file} [${where.index}]`
      : where.file;
}

const DEFAULTS: Required<FieldMap> = {
  text: 'text',
  prompt: 'prompt',
  completion: 'completion',
  instruction: 'instruction',
  input: 'input',
  output: 'output',
  messages: 'messages',
  role: 'role',
  content: 'content',
};
const SHAREGPT: FieldMap = { messages: 'conversations', role: 'from', content: 'value' };
const SHAREGPT_ROLES: Record<string, string> = {
  human: 'user',
  gpt: 'assistant',
  system: 'system',
  user: 'user',
  assistant: 'assistant',
};

const nonEmpty = z.string().refine((s) => s.trim() !== '', { message: 'empty' });

/** The zod schema of one record of `format` under the column names `f`. */
function schemaFor(format: Exclude<DatasetFormat, 'plain'>, f: Required<FieldMap>): z.ZodType<Record<string, unknown>> {
  switch (format) {
    case 'text':
      return z.looseObject({ [f.text]: nonEmpty });
    case 'prompt-completion':
      return z.looseObject({ [f.prompt]: z.string(), [f.completion]: nonEmpty });
    case 'alpaca':
      return z.looseObject({ [f.instruction]: nonEmpty, [f.input]: z.string().nullish(), [f.output]: nonEmpty });
    case 'chat': {
      const message = z.looseObject({ [f.role]: z.string(), [f.content]: z.string() });
      return z.looseObject({ [f.messages]: z.array(message).min(1) });
    }
  }
}

function valueAt(v: unknown, path: readonly PropertyKey[]): unknown {
  for (const k of path) v = typeof v === 'object' && v !== null ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

/** One zod issue as "field "output": expected a string, got number 3" (or "missing field", "is empty"). */
function issueMessage(issue: z.core.$ZodIssue, value: unknown): string {
  const path = issue.path
    .map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`))
    .join('')
    .replace(/^\./, '');
  const field = path === '' ? 'the record' : `field "${path}"`;
  const found = valueAt(value, issue.path);
  if (issue.code === 'invalid_type') {
    if (found === undefined && path !== '') return `missing field "${path}"`;
    return (
      `${field}: expected ` +
      `${issue.expected === 'object' ? 'an object' : issue.expected === 'array' ? 'an array' : `a ${issue.expected}`}, got ${describe(found)}`
    );
  }
  if (issue.code === 'too_small') return `${field} is empty`;
  if (issue.code === 'custom' && issue.message === 'empty') return `${field} is empty`;
  return `${field}: ${issue.message}`;
}

/** Which format a record object has, under the column names `f` (undefined when none fits). */
function detect(value: unknown, f: Required<FieldMap>, fields: FieldMap): Exclude<DatasetFormat, 'plain'> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const has = (k: string) => Object.hasOwn(value, k);
  if (fields.messages !== undefined || has(f.messages)) return 'chat';
  if (fields.instruction !== undefined || fields.output !== undefined || (has(f.instruction) && has(f.output)))
    return 'alpaca';
  if (fields.prompt !== undefined || fields.completion !== undefined || (has(f.prompt) && has(f.completion)))
    return 'prompt-completion';
  if (fields.text !== undefined || has(f.text)) return 'text';
  return undefined;
}

/** The canonical record of a value that passed `schemaFor(format, f)`. */
function toRecord(
  format: Exclude<DatasetFormat, 'plain'>,
  v: Record<string, unknown>,
  f: Required<FieldMap>,
  sharegpt: boolean,
  where: RecordLocation,
): DataRecord {
  switch (format) {
    case 'text':
      return { kind: 'text', text: v[f.text] as string, where };
    case 'prompt-completion':
      return { kind: 'pair', prompt: v[f.prompt] as string, completion: v[f.completion] as string, where };
    case 'alpaca': {
      const prompt = alpacaPrompt(v[f.instruction] as string, (v[f.input] as string | null | undefined) ?? '');
      return { kind: 'pair', prompt, completion: v[f.output] as string, where };
    }
    case 'chat': {
      const messages = (v[f.messages] as Record<string, unknown>[]).map((m) => {
        const role = m[f.role] as string;
        return { role: sharegpt ? (SHAREGPT_ROLES[role] ?? role) : role, content: m[f.content] as string };
      });
      return { kind: 'chat', messages, where };
    }
  }
}

/** "line L, column C" (1-based) of character `pos` in `text`. */
function lineAndColumn(text: string, pos: number): string {
  let line = 1,
    lineStart = 0;
  for (let i = 0; i < pos && i < text.length; i++) if (text.charCodeAt(i) === 10) [line, lineStart] = [line + 1, i + 1];
  return `line ${line}, column ${pos - lineStart + 1}`;
}

/**
 * Offset of the first JSON syntax error in `s` (-1 if none is found). V8's JSON.parse message gives a position
 * for some errors only, and a user with a broken 50 MB array needs the line.
 */
function jsonErrorOffset(s: string): number {
  let i = 0;
  const ws = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r')) i++;
  };
  const expect = (c: string) => {
    ws();
    if (s[i] !== c) throw i;
    i++;
  };
  const literal = /-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null/y;
  const string = () => {
    expect('"');
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c === 34) {
        i++;
        return;
      }
      if (c === 92) i++;
      else if (c < 32) throw i;
    }
    throw i;
  };
  const items = (close: string, item: () => void) => {
    ws();
    if (s[i] === close) {
      i++;
      return;
    }
    for (;;) {
      item();
      ws();
      if (s[i] === close) {
        i++;
        return;
      }
      expect(',');
    }
  };
  const value = (): void => {
    ws();
    if (s[i] === '{') {
      i++;
      items('}', () => {
        ws();
        string();
        expect(':');
        value();
      });
      return;
    }
    if (s[i] === '[') {
      i++;
      items(']', value);
      return;
    }
    if (s[i] === '"') {
      string();
      return;
    }
    literal.lastIndex = i;
    if (!literal.test(s)) throw i;
    i = literal.lastIndex;
  };
  try {
    value();
    ws();
    return i < s.length ? i : -1;
  } catch (e) {
    if (typeof e === 'number') return e;
    if (e instanceof RangeError) return -1; // nested too deep for this scanner; JSON.parse's own message stands
    throw e;
  }
}

/** The raw values of a JSON/JSONL file with their locations, and the lines that are not JSON. */
function parseJsonValues(
  text: string,
  file: string,
  ext: string,
): { values: { value: unknown; where: RecordLocation }[]; problems: RecordProblem[] } {
  const trimmed = text.trimStart();
  const values: { value: unknown; where: RecordLocation }[] = [];
  const problems: RecordProblem[] = [];
  if (trimmed.startsWith('[') || (ext === '.json' && !trimmed.startsWith('{'))) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      const pos = jsonErrorOffset(text);
      const at = pos >= 0 ? ` (${lineAndColumn(text, pos)})` : '';
      throw new LorakitError(
        'LK_FILE_INVALID',
        `${file}: not valid JSON${at}: ${(e as Error).message}; expected a JSON array of records or JSONL (one ` +
          `object per line)`,
        { path: file },
      );
    }
    if (!Array.isArray(parsed))
      throw new LorakitError('LK_FILE_INVALID', `${file}: expected a JSON array of records, got ${describe(parsed)}`, {
        path: file,
      });
    parsed.forEach((value, index) => values.push({ value, where: { file, index } }));
    return { values, problems };
  }
  // JSONL; a .json file that starts with an object is read as JSONL too (datasets' to_json writes that),
  // unless the whole file is one object.
  if (ext === '.json') {
    let whole: unknown;
    try {
      whole = JSON.parse(text);
    } catch {
      whole = undefined;
    }
    if (whole !== undefined) {
      const arrays = Object.entries(whole as object)
        .filter(([, v]) => Array.isArray(v))
        .map(([k]) => `"${k}"`);
      const hint =
        arrays.length > 0 ? `; the records may be its field ${arrays.join(' or ')}: save that array as the file` : '';
      throw new LorakitError(
        'LK_FILE_INVALID',
        `${file}: expected a JSON array of records or JSONL (one object per line), got a single object${hint}`,
        { path: file },
      );
    }
  }
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    try {
      values.push({ value: JSON.parse(line), where: { file, line: i + 1 } });
    } catch (e) {
      problems.push({ file, line: i + 1, message: `invalid JSON: ${(e as Error).message}` });
    }
  });
  if (values.length === 0) {
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: no line is a JSON value${problems[0] ? ` (line ${problems[0].line}: ${problems[0].message})` : ''}; ` +
        `expected JSONL records or a JSON array`,
      { path: file },
    );
  }
  return { values, problems };
}

/** Options of `parseDataFile`. */
export interface ParseOptions {
  format?: DatasetFormat;
  fields?: FieldMap;
}

/** Parses and validates the text of a dataset file (`path` names it in messages and picks the reader by extension). */
export function parseDataFile(path: string, text: string, { format, fields = {} }: ParseOptions = {}): ParsedFile {
  const file = basename(path);
  if (text.trim() === '') throw new LorakitError('LK_FILE_INVALID', `${file}: the file is empty`, { path });
  const ext = extname(path).toLowerCase();
  if (format === 'plain' || (format === undefined && ext === '.txt'))
    return { format: 'plain', records: [{ kind: 'plain', text, where: { file } }], problems: [] };
  if (!['.json', '.jsonl', '.ndjson'].includes(ext) && format === undefined) {
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: unknown dataset file type "${ext}"; expected .txt (plain text), .json (array of records) or .jsonl, ` +
        `or pass the format option`,
      { path },
    );
  }
  const { values, problems } = parseJsonValues(text, file, ext);
  let f: Required<FieldMap> = { ...DEFAULTS, ...fields };
  let found: Exclude<DatasetFormat, 'plain'> | undefined = format;
  let sharegpt = false;
  // The first of the first 100 records that fits a format decides (so a malformed first record does not).
  for (const { value } of values.slice(0, 100)) {
    const direct = detect(value, f, fields);
    const share =
      direct === undefined && fields.messages === undefined && detect(value, { ...f, ...SHAREGPT }, fields) === 'chat';
    if (direct === undefined && !share) continue;
    found ??= direct ?? 'chat';
    sharegpt = share && found === 'chat';
    break;
  }
  if (found === undefined) {
    const first = values.find((v) => typeof v.value === 'object' && v.value !== null)?.value;
    const keys = first
      ? Object.keys(first)
          .map((k) => JSON.stringify(k))
          .join(', ')
      : 'none';
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: unknown record format (keys of the first record: ${keys}); expected "text", "prompt"+"completion", ` +
        `"instruction"+"output" (Alpaca) or "messages"; pass fields (e.g. {prompt: "question", completion: ` +
        `"answer"}) or format`,
      { path },
    );
  }
  if (sharegpt) f = { ...f, ...SHAREGPT };
  const schema = schemaFor(found, f);
  const records: DataRecord[] = [];
  for (const { value, where } of values) {
    const r = schema.safeParse(value);
    if (!r.success) {
      problems.push({ ...where, message: r.error.issues.map((i) => issueMessage(i, value)).join('; ') });
      continue;
    }
    const record = toRecord(found, r.data, f, sharegpt, where);
    if (record.kind === 'chat' && !record.messages.some((m) => m.role === 'assistant' && m.content.trim() !== '')) {
      problems.push({
        ...where,
        message: `field "${f.messages}" has no assistant message with content, so nothing would be trained`,
      });
      continue;
    }
    records.push(record);
  }
  problems.sort((a, b) => (a.line ?? a.index ?? 0) - (b.line ?? b.index ?? 0));
  return { format: found, records, problems };
}
