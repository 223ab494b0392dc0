/**
 * The run config described for people: `configReference()` renders docs/config.md (every key of run.yaml with its
 * type, default and meaning) from the zod schema itself, through its JSON Schema, so the reference cannot drift from
 * what `loadRunConfig` accepts (scripts/config-doc.ts writes the file; a test compares it with the schema); and
 * `resolvedConfigYaml()` prints a loaded config with every default filled in (`lorakit train --print-config`).
 * The other tasks' schemas (`task: diffusion`, `task: segmentation`) follow in their own sections.
 * Not here: the schemas and the loading (config.ts, diffusion-run.ts, segmentation-run.ts).
 */
import { stringify as toYaml } from 'yaml';
import { z } from 'zod';
import { resolveConfig } from '../peft/index.ts';
import { type RunConfig, runConfigSchema } from './config.ts';
import { diffusionRunSchema } from './diffusion-run.ts';
import { segmentationRunSchema } from './segmentation-run.ts';

/** The part of a JSON Schema node the reference reads. */
interface SchemaNode {
  type?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  anyOf?: SchemaNode[];
  items?: SchemaNode;
  properties?: Record<string, SchemaNode>;
  required?: string[];
  additionalProperties?: SchemaNode | boolean;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minLength?: number;
}

/** The path of the generated reference, relative to the repository root. */
export const CONFIG_REFERENCE_PATH = 'docs/config.md';

/** A JSON Schema node as a short type: `integer > 0`, `"a" | "b"`, `number in [0, 1]`, `list of string`. */
function typeOf(n: SchemaNode): string {
  if (n.anyOf) return n.anyOf.map(typeOf).join(' | ');
  if (n.const !== undefined) return JSON.stringify(n.const);
  if (n.enum) return n.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (n.type === 'array') return `list of (${typeOf(n.items ?? {})})`;
  if (n.type === 'object') {
    if (!n.properties) return 'mapping';
    return `{${Object.entries(n.properties)
      .map(([k, v]) => `${k}: ${typeOf(v)}`)
      .join(', ')}}`;
  }
  if (n.type === 'null') return 'null';
  let t = n.type ?? 'any';
  // zod writes ±Number.MAX_SAFE_INTEGER as the bounds of every integer: not bounds anyone set
  const set = (b: number | undefined) => b !== undefined && Math.abs(b) < Number.MAX_SAFE_INTEGER;
  const lo = set(n.exclusiveMinimum) ? `> ${n.exclusiveMinimum}` : set(n.minimum) ? `≥ ${n.minimum}` : '';
  const hi = set(n.maximum) ? `≤ ${n.maximum}` : '';
  if (lo || hi) t += ` ${[lo, hi].filter(Boolean).join(', ')}`;
  if (n.type === 'string' && n.minLength) t = 'string (not empty)';
  return t;
}

const cell = (s: string) => s.replaceAll('|', '\\|').replaceAll('\n', ' ');

/** The table rows of one object's keys (sections, objects with their own keys, get their own table). */
function rows(props: Record<string, SchemaNode>, required: readonly string[]): string[] {
  return Object.entries(props).map(([key, n]) => {
    const dflt =
      n.default !== undefined ? `\`${JSON.stringify(n.default)}\`` : required.includes(key) ? 'required' : '';
    return `| \`${key}\` | ${cell(typeOf(n))} | ${dflt} | ${cell(n.description ?? '')} |`;
  });
}

/** Whether a node is a section: an object with its own documented keys. */
const isSection = (n: SchemaNode) => n.type === 'object' && n.properties !== undefined;

/** The JSON Schema of run.yaml as a user writes it (defaults make keys optional). */
export function runConfigJsonSchema(): SchemaNode {
  return z.toJSONSchema(runConfigSchema, { io: 'input', unrepresentable: 'any' }) as SchemaNode;
}

/** The JSON Schema of another task's run.yaml (`task: diffusion`, `task: segmentation`). */
const taskJsonSchema = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as SchemaNode;

/** The tables of one schema: its plain top-level keys, then one table per section, headings at `level`. */
function schemaTables(root: SchemaNode, level: string, top: string): string[] {
  const props = root.properties ?? {};
  const head = '| key | type | default | description |\n|---|---|---|---|';
  const plain = Object.fromEntries(Object.entries(props).filter(([, n]) => !isSection(n)));
  const out = [`${level} ${top}`, '', head, ...rows(plain, root.required ?? [])];
  for (const [name, n] of Object.entries(props)) {
    if (!isSection(n)) continue;
    out.push('', `${level} \`${name}\``, '', n.description ?? '', '', head, ...rows(n.properties!, n.required ?? []));
  }
  return out;
}

/** docs/config.md: every key of run.yaml, section by section, from the schema's own descriptions. */
export function configReference(): string {
  const out = [
    '# Run config reference',
    '',
    '<!-- Generated from runConfigSchema (src/train/config.ts), diffusionRunSchema (diffusion-run.ts) and ' +
      'segmentationRunSchema (segmentation-run.ts) by `npm run config-doc`; do not edit by hand. ' +
      'test/train/config-doc.test.ts fails when this file and the schemas differ. -->',
    '',
    'The keys of `run.yaml` for `lorakit train --config run.yaml`. An unknown key or a wrong type is an error naming ' +
      "it. Training settings use transformers' `TrainingArguments` names and defaults; relative paths are resolved " +
      "against the YAML file's folder. `lorakit train --config run.yaml --print-config` prints a config with every " +
      'default filled in. Override any key from the command line with `--set section.key=value`.',
    '',
    ...schemaTables(runConfigJsonSchema(), '##', 'Top level'),
  ];
  const tasks: [string, z.ZodType, string][] = [
    [
      'diffusion',
      diffusionRunSchema,
      'A conditional diffusion U-Net, or a concept LoRA on one, trained on digit canvases (docs/vision.md).',
    ],
    ['segmentation', segmentationRunSchema, 'Binary segmentation with a diffusers U-Net and a conv adapter.'],
  ];
  for (const [task, schema, what] of tasks)
    out.push(
      '',
      `## \`task: ${task}\``,
      '',
      `${what} A run.yaml with \`task: ${task}\` is read with this schema instead of the one above.`,
      '',
      ...schemaTables(taskJsonSchema(schema), '###', 'Keys'),
    );
  return `${out.join('\n')}\n`;
}

/**
 * A loaded config as YAML with every default filled in: the training and data defaults of the schema and, for a new
 * adapter, the adapter method's own defaults (a continued adapter, `{from}`, keeps the folder's config).
 */
export function resolvedConfigYaml(c: RunConfig): string {
  const adapter = c.adapter.from === undefined ? resolveConfig(c.adapter, 'run config: adapter').config : c.adapter;
  return toYaml({ ...c, adapter }, { lineWidth: 0 });
}
