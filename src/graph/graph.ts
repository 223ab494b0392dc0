/**
 * The symbolic graph: a `Graph` records ONNX nodes as a model function runs on `Tensor`s.
 * Nothing is computed here; `onnx.ts` serialises a graph and `runtime/` runs it with ONNX Runtime.
 * Shapes and dtypes are inferred as nodes are added (ops/), so shape errors surface where the model code is.
 */
import { LorakitError, check, internal } from '../errors.ts';
import { type AnyTypedArray, type DType, ONNX_DTYPE, arrayFrom, arrayMatchesDtype, isFloat } from './dtype.ts';
import { type Dim, type Shape, fmtShape, numel, isStatic } from './shape.ts';
import {
  OPS,
  type OpName,
  type Attrs,
  type Conv2dOptions,
  type ConvTranspose2dOptions,
  conv2dAttrs,
} from './ops/index.ts';
import type { MemoTable } from './memo.ts';

/** Where an initializer's bytes live: in memory, or at an offset of a file that ONNX Runtime memory-maps. */
export type InitData =
  | { kind: 'array'; array: AnyTypedArray }
  | { kind: 'file'; path: string; offset: number; length: number };

export interface Node {
  readonly id: number;
  readonly op: OpName;
  readonly name: string;
  readonly inputs: readonly (Tensor | null)[];
  readonly outputs: readonly Tensor[];
  readonly attrs: Attrs;
  /** Set on Identity nodes made by `detach()`: autodiff treats the output as a constant. */
  readonly stopGradient?: boolean;
  /** Values a Scan's body reads from the enclosing graph by name (ONNX outer scope): live when the node is. */
  readonly implicitInputs?: readonly Tensor[];
}

/** Every value `n` reads: its inputs, then what a Scan's body reads from outside. */
export const nodeReads = (n: Node): readonly (Tensor | null)[] => [...n.inputs, ...(n.implicitInputs ?? [])];

/** A symbolic tensor: a graph input, an initializer (constant or weight), or a node output. */
export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly Dim[],
    readonly node: Node | null,
    readonly kind: 'input' | 'initializer' | 'node',
  ) {}

  get rank(): number {
    return this.shape.length;
  }
  toString(): string {
    return `${this.name}: ${this.dtype}${fmtShape(this.shape)}`;
  }

  // elementwise arithmetic (numbers become scalar constants of this tensor's dtype)
  add(o: TensorLike): Tensor {
    return this.graph.op('Add', [this, this.lift(o)]);
  }
  sub(o: TensorLike): Tensor {
    return this.graph.op('Sub', [this, this.lift(o)]);
  }
  mul(o: TensorLike): Tensor {
    return this.graph.op('Mul', [this, this.lift(o)]);
  }
  div(o: TensorLike): Tensor {
    return this.graph.op('Div', [this, this.lift(o)]);
  }
  pow(o: TensorLike): Tensor {
    return this.graph.op('Pow', [this, this.lift(o)]);
  }
  maximum(o: TensorLike): Tensor {
    return this.graph.op('Max', [this, this.lift(o)]);
  }
  minimum(o: TensorLike): Tensor {
    return this.graph.op('Min', [this, this.lift(o)]);
  }
  neg(): Tensor {
    return this.graph.op('Neg', [this]);
  }
  exp(): Tensor {
    return this.graph.op('Exp', [this]);
  }
  log(): Tensor {
    return this.graph.op('Log', [this]);
  }
  sqrt(): Tensor {
    return this.graph.op('Sqrt', [this]);
  }
  tanh(): Tensor {
    return this.graph.op('Tanh', [this]);
  }
  erf(): Tensor {
    return this.graph.op('Erf', [this]);
  }
  sigmoid(): Tensor {
    return this.graph.op('Sigmoid', [this]);
  }
  reciprocal(): Tensor {
    return this.graph.op('Reciprocal', [this]);
  }
  /** −1, 0 or 1 by the sign of each entry (no gradient: piecewise constant). */
  sign(): Tensor {
    return this.graph.op('Sign', [this]);
  }
  abs(): Tensor {
    return this.graph.op('Abs', [this]);
  }
  relu(): Tensor {
    return this.graph.op('Relu', [this]);
  }
  sin(): Tensor {
    return this.graph.op('Sin', [this]);
  }
  cos(): Tensor {
    return this.graph.op('Cos', [this]);
  }
  floor(): Tensor {
    return this.graph.op('Floor', [this]);
  }
  // comparisons and logic (not differentiable)
  equal(o: TensorLike): Tensor {
    return this.graph.op('Equal', [this, this.lift(o)]);
  }
  greater(o: TensorLike): Tensor {
    return this.graph.op('Greater', [this, this.lift(o)]);
  }
  less(o: TensorLike): Tensor {
    return this.graph.op('Less', [this, this.lift(o)]);
  }
  and(o: Tensor): Tensor {
    return this.graph.op('And', [this, o]);
  }
  /** Bitwise exclusive or of integer tensors. */
  xor(o: Tensor): Tensor {
    return this.graph.op('BitwiseXor', [this, o]);
  }
  not(): Tensor {
    return this.graph.op('Not', [this]);
  }
  /** where(this, a, b): a where this is true, else b. */
  where(a: TensorLike, b: TensorLike): Tensor {
    const ref = a instanceof Tensor ? a : b instanceof Tensor ? b : null;
    check(ref, 'LK_INVALID_ARGUMENT', 'where: at least one of the two branches must be a tensor');
    return this.graph.op('Where', [this, ref.lift(a), ref.lift(b)]);
  }

  // linear algebra
  /** Matrix product with numpy batch broadcasting: [..., M, K] @ [..., K, N]. */
  matmul(o: Tensor): Tensor {
    return this.graph.op('MatMul', [this, o]);
  }
  /** 2-D general matrix product alpha·op(this)·op(b) + beta·c, op = optional transpose. */
  gemm(b: Tensor, c: Tensor | null = null, { transA = 0, transB = 0, alpha = 1, beta = 1 } = {}): Tensor {
    return this.graph.op('Gemm', c ? [this, b, c] : [this, b], { transA, transB, alpha, beta });
  }

  /** 2-D convolution (ONNX Conv): this [N, C, H, W], w [M, C/groups, kh, kw], bias [M] → [N, M, H', W']. */
  conv2d(w: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
    return this.graph.op('Conv', bias ? [this, w, bias] : [this, w], conv2dAttrs(w, opts));
  }
  /** conv2d's transpose in its input (ONNX ConvTranspose): [N, C, H, W], w [C, M/groups, kh, kw] → [N, M, H', W']. */
  convTranspose2d(w: Tensor, bias: Tensor | null = null, opts: ConvTranspose2dOptions = {}): Tensor {
    return this.graph.op('ConvTranspose', bias ? [this, w, bias] : [this, w], conv2dAttrs(w, opts));
  }

  // reductions
  sum(axes?: number | number[], keepdims = false): Tensor {
    return this.reduce('ReduceSum', axes, keepdims);
  }
  mean(axes?: number | number[], keepdims = false): Tensor {
    return this.reduce('ReduceMean', axes, keepdims);
  }
  max(axes?: number | number[], keepdims = false): Tensor {
    return this.reduce('ReduceMax', axes, keepdims);
  }
  argmax(axis = -1, keepdims = false): Tensor {
    return this.graph.op('ArgMax', [this], { axis, keepdims: keepdims ? 1 : 0 });
  }
  /**
   * The k largest (or smallest) entries along `axis`, sorted, and their i64 indices (ONNX TopK: equal values keep
   * the lower index first). Only the values carry a gradient.
   */
  topk(k: number, axis = -1, largest = true): [values: Tensor, indices: Tensor] {
    const [v, i] = this.graph.opMulti('TopK', [this, this.graph.constInts([k])], { axis, largest: largest ? 1 : 0 }, 2);
    return [v, i];
  }
  private reduce(
    op: 'ReduceSum' | 'ReduceMean' | 'ReduceMax',
    axes: number | number[] | undefined,
    keepdims: boolean,
  ): Tensor {
    const ax = axes === undefined ? this.shape.map((_, i) => i) : Array.isArray(axes) ? axes : [axes];
    return this.graph.op(op, [this, this.graph.constInts(ax)], { keepdims: keepdims ? 1 : 0 });
  }

  // movement
  /** Reshape to `shape` (0 copies the input dim, -1 is inferred) or to the runtime shape held by an i64 tensor. */
  reshape(shape: readonly number[] | Tensor, hint?: Shape): Tensor {
    const s = shape instanceof Tensor ? shape : this.graph.constInts(shape);
    return this.graph.op('Reshape', [this, s], {}, hint ? { shape: hint } : undefined);
  }
  /** Permutes axes; by default reverses them. */
  transpose(perm?: readonly number[]): Tensor {
    return this.graph.op('Transpose', [this], { perm: perm ? [...perm] : this.shape.map((_, i) => this.rank - 1 - i) });
  }
  /** Swaps the last two axes. */
  get T(): Tensor {
    const p = this.shape.map((_, i) => i);
    [p[this.rank - 2], p[this.rank - 1]] = [p[this.rank - 1], p[this.rank - 2]];
    return this.transpose(p);
  }
  unsqueeze(axes: number | number[]): Tensor {
    return this.graph.op('Unsqueeze', [this, this.graph.constInts(Array.isArray(axes) ? axes : [axes])]);
  }
  squeeze(axes: number | number[]): Tensor {
    return this.graph.op('Squeeze', [this, this.graph.constInts(Array.isArray(axes) ? axes : [axes])]);
  }
  /** Slice along `axes` (default 0..n-1) from starts to ends (exclusive), numbers or i64 tensors. */
  slice(
    starts: readonly number[] | Tensor,
    ends: readonly number[] | Tensor,
    axes?: readonly number[],
    steps?: readonly number[],
  ): Tensor {
    const g = this.graph;
    const ins: Tensor[] = [
      this,
      starts instanceof Tensor ? starts : g.constInts(starts),
      ends instanceof Tensor ? ends : g.constInts(ends),
    ];
    const n = starts instanceof Tensor ? (starts.shape[0] as number) : starts.length;
    ins.push(g.constInts(axes ?? Array.from({ length: n }, (_, i) => i)));
    if (steps) ins.push(g.constInts(steps));
    return g.op('Slice', ins);
  }
  /** Splits along `axis` into pieces of the given static sizes. */
  split(sizes: readonly number[], axis = 0): Tensor[] {
    return this.graph.opMulti('Split', [this, this.graph.constInts(sizes)], { axis }, sizes.length);
  }
  /** Broadcasts to `shape` (numbers, or an i64 shape tensor with a static-shape hint). */
  expand(shape: readonly number[] | Tensor, hint?: Shape): Tensor {
    const s = shape instanceof Tensor ? shape : this.graph.constInts(shape);
    return this.graph.op('Expand', [this, s], {}, hint ? { shape: hint } : undefined);
  }
  /** Rows (or slices along `axis`) picked by integer indices: embedding lookup. */
  gather(indices: Tensor, axis = 0): Tensor {
    return this.graph.op('Gather', [this, indices], { axis });
  }
  gatherElements(indices: Tensor, axis = 0): Tensor {
    return this.graph.op('GatherElements', [this, indices], { axis });
  }
  scatterElements(indices: Tensor, updates: Tensor, axis = 0, reduction: 'none' | 'add' = 'none'): Tensor {
    return this.graph.op('ScatterElements', [this, indices, updates], { axis, reduction });
  }
  cast(to: DType): Tensor {
    return to === this.dtype ? this : this.graph.op('Cast', [this], { to: ONNX_DTYPE[to] });
  }
  /** Lower (upper=false) or upper triangle of the last two axes, offset by k diagonals. */
  trilu(upper: boolean, k = 0): Tensor {
    return this.graph.op('Trilu', [this, this.graph.constInts([k], [])], { upper: upper ? 1 : 0 });
  }
  /** The runtime shape as an i64 tensor. */
  shapeOf(): Tensor {
    return this.graph.op('Shape', [this]);
  }
  softmax(axis = -1): Tensor {
    return this.graph.op('Softmax', [this], { axis });
  }
  /** The same values, seen as a constant by autodiff. */
  detach(): Tensor {
    return this.graph.op('Identity', [this], {}, { stopGradient: true });
  }

  /** A number (or tensor) as a tensor of this tensor's dtype. */
  lift(o: TensorLike): Tensor {
    if (o instanceof Tensor) return o;
    return this.graph.scalar(o, this.dtype);
  }
}

export type TensorLike = Tensor | number;

/** Options of an op call that are not ONNX attributes. */
export interface OpExtra {
  shape?: Shape;
  stopGradient?: boolean;
  implicitInputs?: readonly Tensor[];
}

/** A graph under construction. Nodes are appended in a valid topological order. */
export class Graph {
  readonly inputs: Tensor[] = [];
  readonly outputs: { name: string; tensor: Tensor }[] = [];
  readonly nodes: Node[] = [];
  readonly initializers = new Map<string, { tensor: Tensor; data: InitData }>();
  private nextId = 0;
  private names = new Set<string>();
  private scopes: string[] = [];
  private constCache = new Map<string, Tensor>();
  /** Counter behind `freshDim`: per graph, so identical graphs get identical symbols (and identical bytes). */
  private nextDim = 0;
  /** Per-graph memo tables (see memo.ts), by table. */
  private memos = new Map<object, Map<unknown, unknown>>();
  /** Nodes and slice inputs inside a Scan's body, by the Scan node: no node outside may read their values. */
  private inBody = new Map<Node | Tensor, Node>();

  constructor(readonly name = 'lorakit') {}

  /** A fresh symbol (`d0`, `d1`, …) for a dim only known at run time. */
  freshDim(): string {
    return `d${this.nextDim++}`;
  }

  /**
   * The value `table` holds for `key` in this graph, made by `make()` on first use: per-graph caches (tensors
   * built once and shared by every layer) live exactly as long as the graph.
   */
  memo<K, V>(table: MemoTable<K, V>, key: NoInfer<K>, make: () => NoInfer<V>): V {
    let values = this.memos.get(table) as Map<K, V> | undefined;
    if (!values) this.memos.set(table, (values = new Map<K, V>()) as Map<unknown, unknown>);
    if (values.has(key)) return values.get(key) as V;
    const v = make();
    values.set(key, v);
    return v;
  }

  /** Runs `fn` with node names prefixed by `scope/` (HF module paths make errors readable). */
  scope<T>(scope: string, fn: () => T): T {
    this.scopes.push(scope);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  private uniqueName(base: string): string {
    let name = base;
    while (this.names.has(name)) name = `${base}_${this.nextId++}`;
    this.names.add(name);
    return name;
  }

  /** Declares a graph input fed at run time; string dims are symbols bound at run time. */
  input(name: string, dtype: DType, shape: Shape): Tensor {
    check(!this.names.has(name), 'LK_GRAPH_INVALID', `graph input "${name}": the name is already used in this graph`);
    for (const d of shape)
      check(
        typeof d === 'string' || (Number.isInteger(d) && d >= 0),
        'LK_INVALID_ARGUMENT',
        `graph input "${name}": dim ${d} must be a non-negative integer or a symbol`,
      );
    this.names.add(name);
    const t = new Tensor(this, name, dtype, [...shape], null, 'input');
    this.inputs.push(t);
    return t;
  }

  /** An initializer: a weight or constant with known data (in memory or in a file region). */
  initializer(name: string, dtype: DType, shape: readonly number[], data: AnyTypedArray | InitData): Tensor {
    check(!this.names.has(name), 'LK_GRAPH_INVALID', `initializer "${name}": the name is already used in this graph`);
    this.names.add(name);
    return this.addInitializer(name, dtype, shape, data);
  }

  private addInitializer(name: string, dtype: DType, shape: readonly number[], data: AnyTypedArray | InitData): Tensor {
    const init: InitData = 'kind' in data ? data : { kind: 'array', array: data };
    const n = numel(shape)!;
    if (init.kind === 'array') {
      check(
        arrayMatchesDtype(init.array, dtype),
        'LK_DTYPE_MISMATCH',
        `initializer "${name}": a ${init.array.constructor.name} cannot hold ${dtype}`,
      );
      check(
        init.array.length === n,
        'LK_SHAPE_MISMATCH',
        `initializer "${name}": shape ${fmtShape(shape)} needs ${n} values, got ${init.array.length}`,
      );
    }
    const t = new Tensor(this, name, dtype, [...shape], null, 'initializer');
    this.initializers.set(name, { tensor: t, data: init });
    return t;
  }

  /** A constant tensor from JS numbers. */
  constant(values: ArrayLike<number> | ArrayLike<bigint>, dtype: DType, shape: readonly number[]): Tensor {
    return this.addInitializer(this.uniqueName(`const_${this.nextId++}`), dtype, shape, arrayFrom(dtype, values));
  }

  /** A scalar constant (shared between uses). */
  scalar(value: number, dtype: DType): Tensor {
    check(Number.isFinite(value) || isFloat(dtype), 'LK_INVALID_ARGUMENT', `scalar: ${value} is not a valid ${dtype}`);
    const key = `${dtype}:${Object.is(value, -0) ? '-0' : value}`;
    let t = this.constCache.get(key);
    if (!t) {
      t = this.constant([value], dtype, []);
      this.constCache.set(key, t);
    }
    return t;
  }

  /** An i64 constant holding integers (axes, shapes, indices). */
  constInts(values: readonly number[], shape: readonly number[] = [values.length]): Tensor {
    for (const v of values)
      check(Number.isInteger(v), 'LK_INVALID_ARGUMENT', `integer constant: ${v} is not an integer`);
    const key = `ints:${shape.join('x')}:${values.join(',')}`;
    let t = this.constCache.get(key);
    if (!t) {
      t = this.constant(values, 'i64', shape);
      this.constCache.set(key, t);
    }
    return t;
  }

  /** Joins tensors along `axis`. */
  concat(tensors: Tensor[], axis: number): Tensor {
    check(tensors.length > 0, 'LK_INVALID_ARGUMENT', 'concat: needs at least one tensor');
    return tensors.length === 1 ? tensors[0] : this.op('Concat', tensors, { axis });
  }

  /** Integers [start, limit) with `delta` steps, as an i64 (or i32/f32) tensor. */
  range(start: TensorLike, limit: TensorLike, delta: TensorLike = 1, dtype: DType = 'i64'): Tensor {
    const lift = (v: TensorLike) => (typeof v === 'number' ? this.constant([v], dtype, []) : v);
    return this.op('Range', [lift(start), lift(limit), lift(delta)]);
  }

  /** Marks `tensor` as a graph output called `name`. */
  output(name: string, tensor: Tensor): void {
    check(tensor.graph === this, 'LK_GRAPH_INVALID', `output "${name}": the tensor belongs to another graph`);
    check(!this.outputs.some((o) => o.name === name), 'LK_GRAPH_INVALID', `output "${name}" is declared twice`);
    // An output name must be produced by a node of its own; inputs/initializers/reused tensors get an Identity.
    if (tensor.kind !== 'node' || this.outputs.some((o) => o.tensor === tensor) || tensor.name !== name) {
      check(!this.names.has(name), 'LK_GRAPH_INVALID', `output "${name}": the name is already used in this graph`);
      tensor = this.op('Identity', [tensor], {}, undefined, name);
    }
    this.outputs.push({ name, tensor });
  }

  /** Adds a single-output node after inferring its dtype and shape. */
  op(op: OpName, inputs: (Tensor | null)[], attrs: Attrs = {}, extra?: OpExtra, outName?: string): Tensor {
    return this.addNode(op, inputs, attrs, 1, extra, outName)[0];
  }

  /** Adds a node with `nOut` outputs. */
  opMulti(op: OpName, inputs: (Tensor | null)[], attrs: Attrs, nOut: number): Tensor[] {
    return this.addNode(op, inputs, attrs, nOut);
  }

  private addNode(
    op: OpName,
    inputs: (Tensor | null)[],
    attrs: Attrs,
    nOut: number,
    extra?: OpExtra,
    outName?: string,
  ): Tensor[] {
    const def = OPS[op];
    if (!def)
      throw new LorakitError('LK_UNKNOWN_OP', `unknown op "${op}"; lorakit knows ${Object.keys(OPS).join(', ')}`);
    const id = this.nextId++;
    const name = this.uniqueName([...this.scopes, `${op}_${id}`].join('/'));
    for (const [i, t] of inputs.entries()) {
      if (t && t.graph !== this)
        throw new LorakitError('LK_GRAPH_INVALID', `${name}: input ${i} (${t.name}) belongs to another graph`);
    }
    let infos: ReturnType<typeof def.infer>;
    try {
      infos = def.infer(inputs, attrs, nOut);
    } catch (e) {
      if (e instanceof LorakitError) {
        throw new LorakitError(
          e.code,
          `${name}: ${e.message}; inputs ${inputs.map((t) => (t ? t.toString() : 'none')).join(', ')}`,
          { node: name },
        );
      }
      throw e;
    }
    // A caller's shape hint names dims that inference could not know (shapes computed at run time).
    if (extra?.shape && !isStatic(infos[0].shape)) {
      check(
        extra.shape.length === infos[0].shape.length,
        'LK_SHAPE_MISMATCH',
        `${name}: shape hint ${fmtShape(extra.shape)} has the wrong rank for ${fmtShape(infos[0].shape)}`,
      );
      infos[0] = { ...infos[0], shape: [...extra.shape] };
    }
    const { stopGradient, implicitInputs } = extra ?? {};
    const node: Node = { id, op, name, inputs, outputs: [], attrs, stopGradient, implicitInputs };
    const outs = infos.map(
      (info, i) =>
        new Tensor(
          this,
          i === 0 && outName ? outName : this.uniqueName(`${name}:${i}`),
          info.dtype,
          info.shape,
          node,
          'node',
        ),
    );
    if (outName) this.names.add(outName);
    (node.outputs as Tensor[]).push(...outs);
    this.nodes.push(node);
    return outs;
  }

  /**
   * `body` once per slice of `xs` along axis 0, as one ONNX Scan node: returns each body output stacked along a new
   * axis 0. The body's nodes appear once in the model, so ORT makes (and prepacks the constant weights of) each
   * kernel once, where an unrolled loop makes one per slice: a frozen LM head's weight was packed 8 times over.
   * Nodes the body adds that do not depend on a slice (a weight's transpose, a memoised gather) stay in this
   * graph, computed once, and the body reads them by name. The body's values cannot be read outside it; nothing is
   * differentiated through the Scan (detach its inputs).
   */
  scan(xs: readonly Tensor[], body: (slices: Tensor[]) => Tensor[]): Tensor[] {
    check(xs.length > 0, 'LK_INVALID_ARGUMENT', 'scan: needs at least one scanned input');
    const slices = xs.map((x) => {
      const name = this.uniqueName(`${x.name}/slice`);
      return new Tensor(this, name, x.dtype, x.shape.slice(1), null, 'input');
    });
    const start = this.nodes.length;
    const ys = body(slices);
    // the body: the new nodes that read a slice, directly or through another body node
    const inside = new Set<Tensor>(slices);
    const nodes: Node[] = [];
    for (const n of this.nodes.splice(start)) {
      if (nodeReads(n).some((t) => t && inside.has(t))) {
        nodes.push(n);
        for (const o of n.outputs) inside.add(o);
      } else this.nodes.push(n);
    }
    for (const y of ys)
      check(
        y.node !== null && nodes.includes(y.node) && ys.indexOf(y) === ys.lastIndexOf(y),
        'LK_GRAPH_INVALID',
        `scan: body output ${y.name} must be computed from the slices, once per output`,
      );
    const outer = new Set<Tensor>();
    for (const n of nodes) for (const t of nodeReads(n)) if (t && !inside.has(t)) outer.add(t);
    const attrs = { body: { nodes, inputs: slices, outputs: ys }, num_scan_inputs: xs.length };
    const outs = this.addNode('Scan', [...xs], attrs, ys.length, { implicitInputs: [...outer] });
    for (const k of [...nodes, ...slices]) this.inBody.set(k, outs[0].node!);
    return outs;
  }

  /** The nodes that the outputs depend on, in topological order (ORT runs every node it is given). */
  liveNodes(): Node[] {
    const live = new Set<Node>();
    const stack = this.outputs.map((o) => o.tensor.node).filter((n): n is Node => n !== null);
    while (stack.length) {
      const n = stack.pop()!;
      if (live.has(n)) continue;
      live.add(n);
      for (const t of nodeReads(n)) {
        const scan = t && this.inBody.get(t.node ?? t);
        if (scan)
          throw new LorakitError('LK_GRAPH_INVALID', `${n.name} reads ${t.name}, a value inside ${scan.name}'s body`);
        if (t?.node && !live.has(t.node)) stack.push(t.node);
      }
    }
    return this.nodes.filter((n) => live.has(n));
  }

  /** The initializers the live nodes use (a Scan's body's among them). */
  liveInitializers(nodes = this.liveNodes()): { tensor: Tensor; data: InitData }[] {
    const used = new Set<string>();
    for (const n of nodes) for (const t of nodeReads(n)) if (t?.kind === 'initializer') used.add(t.name);
    for (const o of this.outputs) if (o.tensor.kind === 'initializer') used.add(o.tensor.name);
    return [...this.initializers.values()].filter((i) => used.has(i.tensor.name));
  }
}

export { internal };
