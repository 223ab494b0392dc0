// Per-graph memo tables: a value lives in the graph that made it, and graph/ and nn/ keep no module-level state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Graph, memoTable, type Tensor } from '../../src/graph/index.ts';

test('memo makes a value once per graph and key; another graph or key gets its own', () => {
  const NEG = memoTable<Tensor, Tensor>('test: negation');
  const made: string[] = [];
  const negOf = (t: Tensor) =>
    t.graph.memo(NEG, t, () => {
      made.push(t.name);
      return t.neg();
    });
  const g1 = new Graph('a'),
    g2 = new Graph('b');
  const x1 = g1.input('x', 'f32', [2]),
    y1 = g1.input('y', 'f32', [2]),
    x2 = g2.input('x', 'f32', [2]);
  assert.equal(negOf(x1), negOf(x1));
  assert.notEqual(negOf(y1), negOf(x1));
  assert.equal(negOf(x2).graph, g2);
  assert.deepEqual(made, ['x', 'y', 'x']);
  assert.equal(g1.nodes.filter((n) => n.op === 'Neg').length, 2);
  assert.equal(g2.nodes.filter((n) => n.op === 'Neg').length, 1);
  assert.ok(Object.isFrozen(NEG), 'a table is a frozen name: its values live in the graphs');
});

test('graph/ and nn/ hold no module-level mutable state (counters, caches): it belongs to a Graph', () => {
  const root = join(import.meta.dirname, '..', '..', 'src');
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts'))
        readFileSync(p, 'utf8')
          .split('\n')
          .forEach((line, i) => {
            // top-level `let`/`var`, or a top-level const holding a Map, Set or WeakMap not typed read-only
            const mutable =
              /^(export )?(let|var) /.test(line) ||
              (/^(export )?const \w+(: [^=]+)? = new (Weak)?(Map|Set)\b/.test(line) && !/^[^=]*: Readonly/.test(line));
            if (mutable) offenders.push(`${p.slice(root.length + 1)}:${i + 1}: ${line.trim()}`);
          });
    }
  };
  walk(join(root, 'graph'));
  walk(join(root, 'nn'));
  assert.deepEqual(offenders, []);
});
