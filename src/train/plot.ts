/**
 * The loss curve of a run as a standalone SVG (`loss.svg`): the training loss per step and the eval loss at each
 * evaluation, rendered by Vega's headless renderer (no browser, no canvas; see docs/decisions.md for the choice).
 * Vega is imported on first use, so training without plots never loads it. Not here: metrics files, progress output.
 */
import { writeFileAtomic } from '../io/index.ts';

/** One point of the history: a step and its losses (records of metrics.jsonl fit). */
export interface LossPoint {
  step: number;
  loss?: number;
  eval_loss?: number;
}

/** Options of the plot. */
export interface LossPlotOptions {
  width?: number;
  height?: number;
  title?: string;
  /** At most this many training points are drawn (evenly thinned, the last one kept); default 2000. */
  maxPoints?: number;
}

const COLORS = { train: '#4c78a8', eval: '#f58518' };
/** Pixels kept free at each end of both axes: a point at the first or last step is drawn whole, not on the edge. */
const X_PADDING = 20;
/** Up to this many eval points are labelled with their value (more would overlap). */
const MAX_EVAL_LABELS = 12;

function thin<T>(xs: T[], max: number): T[] {
  if (xs.length <= max) return xs;
  const stride = Math.ceil(xs.length / max);
  const out = xs.filter((_, i) => i % stride === 0);
  if (out[out.length - 1] !== xs[xs.length - 1]) out.push(xs[xs.length - 1]);
  return out;
}

/**
 * The Vega spec of the plot: two named line marks, `train` and `eval`, eval points marked (and labelled with their
 * value when there are few, so a run with one or two evaluations still reads), a log y axis when the loss spans over
 * a decade. The x axis keeps X_PADDING pixels free at both ends: an eval at the last step would otherwise sit on
 * the plot's right edge, half drawn.
 */
export function lossPlotSpec(history: readonly LossPoint[], opts: LossPlotOptions = {}): Record<string, unknown> {
  const train = thin(
    history.filter((h) => Number.isFinite(h.loss)).map((h) => ({ step: h.step, loss: h.loss! })),
    opts.maxPoints ?? 2000,
  );
  const evals = history.filter((h) => Number.isFinite(h.eval_loss)).map((h) => ({ step: h.step, loss: h.eval_loss! }));
  const all = [...train, ...evals].map((p) => p.loss);
  const lo = Math.min(...all),
    hi = Math.max(...all);
  const log = all.length > 0 && lo > 0 && hi / lo > 10;
  const series = [
    { name: 'train', data: train },
    { name: 'eval', data: evals },
  ].filter((s) => s.data.length > 0);
  return {
    $schema: 'https://vega.github.io/schema/vega/v6.json',
    width: opts.width ?? 640,
    height: opts.height ?? 320,
    padding: 8,
    background: 'white',
    title: { text: opts.title ?? 'training and eval loss', anchor: 'start' },
    data: [
      ...series.map((s) => ({ name: `${s.name}_data`, values: s.data })),
      { name: 'all', values: [...train, ...evals] },
    ],
    scales: [
      {
        name: 'x',
        type: 'linear',
        domain: { data: 'all', field: 'step' },
        range: 'width',
        zero: false,
        nice: true,
        padding: X_PADDING,
      },
      {
        name: 'y',
        type: log ? 'log' : 'linear',
        domain: { data: 'all', field: 'loss' },
        range: 'height',
        nice: true,
        zero: false,
        padding: X_PADDING, // room for an eval label above the highest point
      },
      {
        name: 'color',
        type: 'ordinal',
        domain: series.map((s) => s.name),
        range: series.map((s) => COLORS[s.name as keyof typeof COLORS]),
      },
    ],
    axes: [
      { orient: 'bottom', scale: 'x', title: 'step', tickMinStep: 1 },
      { orient: 'left', scale: 'y', title: log ? 'loss (log scale)' : 'loss', grid: true },
    ],
    // outside the data rectangle, so it never hides the end of a curve
    legends: [{ stroke: 'color', orient: 'right', symbolType: 'stroke' }],
    marks: series.flatMap((s) => [
      {
        type: 'line',
        name: s.name,
        from: { data: `${s.name}_data` },
        encode: {
          enter: {
            x: { scale: 'x', field: 'step' },
            y: { scale: 'y', field: 'loss' },
            stroke: { value: COLORS[s.name as keyof typeof COLORS] },
            strokeWidth: { value: 1.5 },
          },
        },
      },
      ...(s.name === 'eval'
        ? [
            {
              type: 'symbol',
              name: 'eval_points',
              from: { data: 'eval_data' },
              encode: {
                enter: {
                  x: { scale: 'x', field: 'step' },
                  y: { scale: 'y', field: 'loss' },
                  fill: { value: COLORS.eval },
                  stroke: { value: 'white' },
                  strokeWidth: { value: 1 },
                  size: { value: 48 },
                },
              },
            },
            ...(evals.length <= MAX_EVAL_LABELS
              ? [
                  {
                    type: 'text',
                    name: 'eval_labels',
                    from: { data: 'eval_data' },
                    encode: {
                      enter: {
                        x: { scale: 'x', field: 'step' },
                        y: { scale: 'y', field: 'loss', offset: -8 },
                        text: { signal: "format(datum.loss, '.4')" },
                        align: { value: 'center' },
                        baseline: { value: 'bottom' },
                        fill: { value: COLORS.eval },
                        fontSize: { value: 10 },
                      },
                    },
                  },
                ]
              : []),
          ]
        : []),
    ]),
  };
}

/** Renders the loss plot as an SVG document. */
export async function renderLossPlot(history: readonly LossPoint[], opts: LossPlotOptions = {}): Promise<string> {
  const vega = await import('vega');
  const view = new vega.View(vega.parse(lossPlotSpec(history, opts) as import('vega').Spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes the loss plot to `path` atomically (nothing is written when the history has no loss yet). */
export async function writeLossPlot(
  path: string,
  history: readonly LossPoint[],
  opts: LossPlotOptions = {},
): Promise<void> {
  if (!history.some((h) => Number.isFinite(h.loss) || Number.isFinite(h.eval_loss))) return;
  await writeFileAtomic(path, await renderLossPlot(history, opts));
}
