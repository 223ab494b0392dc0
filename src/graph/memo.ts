/**
 * Typed per-graph memo tables: a cache that belongs to one graph (the −sin of a RoPE table, a mask's factors, the
 * position ids every projection shares) lives in that Graph and dies with it, instead of in a module-level WeakMap
 * that every graph in the process shares. A `MemoTable` is only a typed name: it holds no values itself, so a
 * module-level constant of this type is not mutable state. Not here: the Graph (`graph.ts` owns the tables).
 */

/** The name and value types of one per-graph memo table; pass it to `graph.memo(table, key, make)`. */
export interface MemoTable<K, V> {
  /** What the table holds (for debugging). */
  readonly name: string;
  /** Carries K and V for the type checker only; never set. */
  readonly types?: (key: K) => V;
}

/** A new memo table named `name` (frozen: it holds no state; values live in each Graph). */
export function memoTable<K, V>(name: string): MemoTable<K, V> {
  return Object.freeze({ name });
}
