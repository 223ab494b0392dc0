// Selection by similarity to a target LoRA: π-Tuning's quasi Fisher information (the Fisher diagonal is the mean of
// squared per-sample gradients: entries of both adapters' blocks checked against float64 central differences of each
// sample's loss under base + that adapter alone; the embedding ignores the order of rank units) and the Recycling
// study's closeness (against a dense float64 ΔW, and its exact values for an adapter and its negation).
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  CLOSENESS_VARIANTS,
  closeness,
  coefficientGraph,
  factorFeeds,
  poolFromLoras,
  quasiFisher,
  quasiFisherSimilarity,
  type RecycledPool,
  selectTopK,
  type TokenBatch,
  totalRank,
  windowsOf,
} from '../../src/adaptive/index.ts';
import { Graph } from '../../src/graph/index.ts';
import { loadModel } from '../../src/models/index.ts';
import type { compose } from '../../src/peft/index.ts';
import { compile, shutdownRuntime } from '../../src/runtime/index.ts';
import { causalLmLoss } from '../../src/train/index.ts';
import { assertAllclose } from '../helpers.ts';
import { denseDelta, LLAMA, randomBatch, randomLora, TARGETS } from './tiny.ts';

after(shutdownRuntime);
const T = 6;
const adapters = [randomLora(21, 2, 2, 0.2), randomLora(22, 3, 1, 0.2), randomLora(23, 2, 1.5, 0.2)];
const pool = poolFromLoras(['a', 'b', 'c'], adapters);
const one = (ad: compose.LoraAdapter) => poolFromLoras(['target'], [ad]);

/** The same adapter with its rank units in reverse order (ΔW unchanged). */
function reversedRanks(ad: compose.LoraAdapter): compose.LoraAdapter {
  const modules = new Map<string, compose.LoraModule>();
  for (const [path, m] of ad.modules) {
    const a = new Float64Array(m.a.length);
    const b = new Float64Array(m.b.length);
    for (let k = 0; k < m.r; k++) {
      a.set(m.a.slice(k * m.in, (k + 1) * m.in), (m.r - 1 - k) * m.in);
      for (let o = 0; o < m.out; o++) b[o * m.r + (m.r - 1 - k)] = m.b[o * m.r + k];
    }
    modules.set(path, { ...m, a, b });
  }
  return { ...ad, modules };
}

test('the Fisher diagonal is the mean of squared per-sample gradients (float64 central differences)', async () => {
  const model = await loadModel(LLAMA);
  try {
    const samples: TokenBatch[] = [randomBatch(7, 3, T)];
    const windows = windowsOf(samples, T);
    assert.equal(windows.length, 3);
    const fisher = await quasiFisher(pool, { model, samples, seqLen: T, dtype: 'f64' });
    // each sample's loss in float64 with the factors and the one-hot coefficient as feeds
    const g = new Graph('fd');
    const cg = coefficientGraph(g, pool, { granularity: 'task', phi: 'linear' }, 'f64');
    const ctx = model.context(g, { hooks: cg.hooks, dtype: 'f64' });
    const ids = g.input('input_ids', 'i64', [1, T]);
    const labels = g.input('labels', 'i64', [T]);
    g.output('loss', causalLmLoss({ ctx, inputIds: ids, labels, labelsAre: 'next' }).loss);
    const session = await compile(g, { optimization: 'disabled' });
    try {
      const base = factorFeeds(cg, pool, 'f64') as Record<string, Float64Array>;
      const lossAt = async (i: number, name: string, j: number, h: number, s: TokenBatch) => {
        const v = base[name].slice();
        v[j] += h;
        const w = new Float64Array(pool.names.length);
        w[i] = 1;
        const out = await session.run({ ...base, [name]: v, [cg.w.name]: w, input_ids: s.inputIds, labels: s.labels });
        return Number(out.loss.data[0]);
      };
      // [adapter, module, factor, rank unit within the adapter, column or row]
      const cases: [number, number, 'A' | 'B', number, number][] = [
        [0, 0, 'A', 1, 5],
        [1, 2, 'A', 2, 100],
        [1, 1, 'B', 0, 17],
        [2, 2, 'B', 1, 40],
      ];
      const h = 1e-5;
      for (const [i, k, f, unit, x] of cases) {
        const m = pool.modules[k];
        const row = m.offsets[i] + unit;
        const j = f === 'A' ? row * m.in + x : x * totalRank(m) + row;
        let sq = 0;
        for (const s of windows) {
          const d =
            ((await lossAt(i, `pool.${k}.${f}`, j, h, s)) - (await lossAt(i, `pool.${k}.${f}`, j, -h, s))) / 2 / h;
          sq += d * d;
        }
        const got = f === 'A' ? fisher[k].a[j] : fisher[k].b[j];
        assert.ok(got > 0, `adapter ${i} module ${k} ${f}[${j}]: Fisher ${got}`);
        assertAllclose([got], [sq / windows.length], { rtol: 1e-5 });
      }
    } finally {
      await session.dispose();
    }
  } finally {
    await model.close();
  }
});

test('quasi-Fisher selection: the target itself, with its rank units reordered, has similarity 1 and comes first', async () => {
  const model = await loadModel(LLAMA);
  try {
    const samples = [randomBatch(8, 2, T)];
    const o = { model, samples, seqLen: T };
    const sim = await quasiFisherSimilarity(pool, one(reversedRanks(adapters[1])), o);
    assertAllclose([sim[1]], [1], { rtol: 1e-5 });
    assert.ok(sim[0] < 0.999 && sim[2] < 0.999, `similarities ${sim}`);
    const sel = await selectTopK(pool, {
      strategy: 'quasi-fisher',
      k: 2,
      target: one(adapters[1]),
      ...o,
      train: samples,
    });
    assert.equal(sel.keep[0], 1);
    assert.equal(sel.keep.length, 2);
    await assert.rejects(selectTopK(pool, { strategy: 'quasi-fisher', k: 2, ...o, train: samples }), /target LoRA/);
  } finally {
    await model.close();
  }
});

test("the study's closeness: cosine equals the dense float64 ΔW cosine averaged over modules", () => {
  const target = randomLora(30, 4, 0.7, 0.2);
  const got = closeness(pool, one(target), 'cosine');
  adapters.forEach((ad, i) => {
    let sum = 0;
    for (const [path] of TARGETS) {
      const c = denseDelta([ad], path, [1]);
      const t = denseDelta([target], path, [1]);
      let dot = 0,
        nc = 0,
        nt = 0;
      for (let j = 0; j < c.length; j++) {
        dot += c[j] * t[j];
        nc += c[j] ** 2;
        nt += t[j] ** 2;
      }
      sum += dot / Math.sqrt(nc * nt);
    }
    assertAllclose([got[i]], [sum / TARGETS.length], { rtol: 1e-6, atol: 1e-9 });
  });
  const sel = closeness(pool, one(adapters[2]), 'cosine');
  assertAllclose([sel[2]], [1], { rtol: 1e-6 });
});

test("the study's closeness variants on an adapter and its negation (B → -B)", () => {
  const ad = adapters[0];
  const neg = one({
    ...ad,
    modules: new Map([...ad.modules].map(([p, m]) => [p, { ...m, b: m.b.map((v) => -v) }])),
  });
  const self: RecycledPool = one(ad);
  const want: Record<string, [number, number]> = {
    cosine: [1, -1],
    clamp: [1, 0],
    clamp_pm: [1, 0],
    abs: [1, 1],
    quasi_fim: [1, 1],
  };
  for (const v of CLOSENESS_VARIANTS) {
    const got = [closeness(self, self, v)[0], closeness(self, neg, v)[0]];
    assertAllclose(got, want[v], { rtol: 1e-6, atol: 1e-9 });
  }
  assert.throws(() => closeness(self, self, 'l2' as never), /variant must be one of/);
});
