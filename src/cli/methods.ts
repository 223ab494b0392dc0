/**
 * `lorakit methods`: every registered adapter method and variant with its paper, its PEFT name, whether it merges,
 * and the trainable parameters it adds to a model (default: the bundled demo base) for a config whose shared
 * fields (default target_modules all-linear, r 8) apply to every method that has them. Computed from each
 * method's own formula on the targeted layers; never loads ONNX Runtime.
 */
import { LorakitError } from '../errors.ts';
import type { CatalogRow } from '../peft/catalog.ts';
import type { CommandModule } from './main.ts';

/** The catalogue as an aligned text table. */
export function formatCatalog(rows: readonly CatalogRow[], model: string, common: Record<string, unknown>): string {
  const head = ['method', 'kind', 'PEFT', 'merges', 'trainable', 'paper'];
  const cells = rows.map((r) => [
    r.name,
    r.kind === 'method' ? 'method' : `variant of ${r.of}`,
    r.peft ?? '—',
    r.merges === true ? 'yes' : 'no',
    typeof r.trainable === 'number' ? r.trainable.toLocaleString('en-US') : r.trainable === null ? '—' : 'n/a',
    r.paper,
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((v, i) => (i === c.length - 1 ? v : v.padEnd(width[i]))).join('  ');
  const notes = rows
    .filter((r) => typeof r.trainable === 'string' || r.merges !== true)
    .map((r) => `  ${r.name}: ${typeof r.trainable === 'string' ? r.trainable : `does not merge: ${r.merges}`}`);
  return [
    `trainable parameters on ${model} with ${JSON.stringify(common)} (fields a method lacks are left out):`,
    line(head),
    ...cells.map(line),
    ...(notes.length ? ['', 'notes:', ...notes] : []),
  ].join('\n');
}

export const register: CommandModule['register'] = (cli) => {
  cli
    .command('methods', 'List the adapter methods and variants: paper, PEFT name, merge, trainable parameters')
    .option('--model <dir>', 'Model folder or hub id the counts are for (default: the bundled demo base)')
    .option('--config <json>', 'Config fields applied to every method that has them', {
      default: '{"target_modules":"all-linear","r":8}',
    })
    .option('--json', 'Print the rows as JSON')
    .action(async (flags: { model?: string; config: string; json?: boolean }) => {
      let common: Record<string, unknown>;
      try {
        common = JSON.parse(flags.config);
      } catch (e) {
        throw new LorakitError('LK_INVALID_ARGUMENT', `--config: not valid JSON (${(e as Error).message})`, {
          option: 'config',
        });
      }
      const { DEMO_BASE_DIR } = await import('../demo/base.ts');
      const { loadModel } = await import('../models/load.ts');
      const { adaptable } = await import('../peft/base.ts');
      const { methodCatalog } = await import('../peft/catalog.ts');
      const dir = flags.model ?? DEMO_BASE_DIR;
      const model = await loadModel(dir);
      try {
        const rows = methodCatalog(adaptable(model), common);
        console.log(flags.json ? JSON.stringify(rows, null, 2) : formatCatalog(rows, dir, common));
      } finally {
        await model.close();
      }
    });
};
