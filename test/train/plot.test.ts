// loss.svg: written next to the run, well-formed XML, with a train and an eval line; the y axis turns logarithmic
// only when the loss spans more than a decade.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { shutdownRuntime } from '../../src/runtime/index.ts';
import { lossPlotSpec, renderLossPlot, train, writeLossPlot } from '../../src/train/index.ts';
import { regressionTask } from './fixtures/tasks.ts';

after(() => shutdownRuntime());

type El = Record<string, unknown>;
/** Every element named `tag` in a parsed document (fast-xml-parser's preserveOrder shape). */
function findAll(nodes: El[], tag: string, out: El[] = []): El[] {
  for (const n of nodes) {
    for (const [k, v] of Object.entries(n)) {
      if (k === ':@') continue;
      if (k === tag) out.push(n);
      if (Array.isArray(v)) findAll(v as El[], tag, out);
    }
  }
  return out;
}
const attrs = (n: El) => (n[':@'] ?? {}) as Record<string, string>;

/** The path data of the line mark named `name` (Vega writes a mark's name into its group's class). */
function linePath(doc: El[], name: string): string | undefined {
  const group = findAll(doc, 'g').find((g) => attrs(g)['@_class'] === `mark-line role-mark ${name}`);
  if (!group) return undefined;
  const path = findAll(group.g as El[], 'path')[0];
  return path && attrs(path)['@_d'];
}

test('a run with evaluation writes loss.svg: valid XML holding a train line and an eval line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lorakit-plot-'));
  await train(regressionTask(), { outputDir: dir, steps: 30, lr: 0.02, evalEvery: 10, progress: 'none' });
  const svg = readFileSync(join(dir, 'loss.svg'), 'utf8');
  assert.equal(XMLValidator.validate(svg), true);
  const doc = new XMLParser({ preserveOrder: true, ignoreAttributes: false }).parse(svg) as El[];
  const root = findAll(doc, 'svg')[0];
  assert.ok(root, 'the document element is <svg>');
  assert.equal(attrs(root)['@_xmlns'], 'http://www.w3.org/2000/svg');
  const train30 = linePath(doc, 'train'),
    eval3 = linePath(doc, 'eval');
  assert.ok(train30 && train30.split('L').length === 30, `train line has 30 points: ${train30?.slice(0, 80)}`);
  assert.ok(eval3 && eval3.split('L').length === 3, `eval line has 3 points: ${eval3}`);
  const labels = findAll(doc, 'text').map((t) => ((t.text as El[])[0]?.['#text'] ?? '') as string);
  for (const l of ['train', 'eval', 'step']) assert.ok(labels.includes(l), `text "${l}" in ${labels.join('|')}`);
});

test('the y axis is logarithmic only when the loss spans more than a decade; no loss means no file', async () => {
  const yType = (h: { step: number; loss?: number }[]) =>
    (lossPlotSpec(h).scales as { name: string; type: string }[]).find((s) => s.name === 'y')!.type;
  assert.equal(
    yType([
      { step: 1, loss: 5 },
      { step: 2, loss: 0.2 },
    ]),
    'log',
  );
  assert.equal(
    yType([
      { step: 1, loss: 1 },
      { step: 2, loss: 0.5 },
    ]),
    'linear',
  );
  assert.equal(
    yType([
      { step: 1, loss: 5 },
      { step: 2, loss: 0 },
    ]),
    'linear',
    'a zero loss cannot go on a log axis',
  );
  const path = join(mkdtempSync(join(tmpdir(), 'lorakit-plot-')), 'loss.svg');
  await writeLossPlot(path, []);
  assert.ok(!existsSync(path));
});

test('a long history is thinned to maxPoints, keeping the last step', () => {
  const h = Array.from({ length: 10_000 }, (_, i) => ({ step: i + 1, loss: 1 / (i + 1) }));
  const data = (lossPlotSpec(h, { maxPoints: 500 }).data as { name: string; values: { step: number }[] }[]).find(
    (d) => d.name === 'train_data',
  )!.values;
  assert.ok(data.length <= 501);
  assert.equal(data[data.length - 1].step, 10_000);
});

test('one eval point at the last step is drawn inside the plot, away from its edge, and labelled with its value', async () => {
  const history = [1, 2, 3, 4].map((s) => ({ step: s, loss: 2 - s / 10, ...(s === 4 ? { eval_loss: 1.7532 } : {}) }));
  const width = 640;
  const doc = new XMLParser({ preserveOrder: true, ignoreAttributes: false }).parse(
    await renderLossPlot(history, { width }),
  ) as El[];
  const group = findAll(doc, 'g').find((g) => attrs(g)['@_class'] === 'mark-symbol role-mark eval_points');
  const point = group && findAll(group.g as El[], 'path')[0];
  const m = point && /translate\(([-\d.]+),([-\d.]+)\)/.exec(attrs(point)['@_transform']);
  assert.ok(m, 'the eval point is drawn');
  const x = Number(m[1]);
  assert.ok(x > 10 && x < width - 10, `the eval point's x ${x} is at least 10 px inside [0, ${width}]`);
  const labels = findAll(doc, 'text').map((t) => ((t.text as El[])[0]?.['#text'] ?? '') as string | number);
  assert.ok(labels.map(String).includes('1.753'), `the eval loss is written by its point: ${labels.join('|')}`);
  const many = Array.from({ length: 40 }, (_, i) => ({ step: i + 1, loss: 1, eval_loss: 1 }));
  const marks = (lossPlotSpec(many).marks as { name: string }[]).map((k) => k.name);
  assert.ok(!marks.includes('eval_labels'), 'many eval points are not labelled (the labels would overlap)');
});
