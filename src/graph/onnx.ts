/**
 * Graph → ONNX ModelProto bytes. Only live nodes (those the outputs need) are written, since ONNX Runtime runs every
 * node it is given. Initializers are written inline, or as external data that ORT memory-maps when `externalize`
 * says where their bytes live (a file in the model's folder).
 */
import { LorakitError } from '../errors.ts';
import { ONNX_DTYPE, type AnyTypedArray } from './dtype.ts';
import { type Graph, type Tensor, type InitData, type Node, nodeReads } from './graph.ts';
import { FLOAT_ATTRS, OPS, type AttrGraph, type AttrTensor } from './ops/index.ts';
import { ProtoWriter } from './protobuf.ts';

export const OPSET = 18;
export const IR_VERSION = 8;

export interface OnnxOptions {
  /** For each initializer: where its bytes are stored outside the model, or null to write them inline. */
  externalize?: (name: string, data: InitData, byteLength: number) => { location: string; offset: number } | null;
  /** Producer tag written into the model. */
  docString?: string;
}

const bytesOf = (a: AnyTypedArray) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function tensorProto(
  name: string,
  t: { dtype: Tensor['dtype']; shape: readonly number[] },
  data: InitData,
  opts: OnnxOptions,
): ProtoWriter {
  const w = new ProtoWriter();
  w.ints(1, t.shape).int(2, ONNX_DTYPE[t.dtype]).string(8, name);
  const length = data.kind === 'array' ? data.array.byteLength : data.length;
  const ext = opts.externalize?.(name, data, length) ?? null;
  if (ext) {
    const kv = (k: string, v: string) => new ProtoWriter().string(1, k).string(2, v);
    w.message(13, kv('location', ext.location))
      .message(13, kv('offset', String(ext.offset)))
      .message(13, kv('length', String(length)));
    w.int(14, 1);
  } else if (data.kind === 'array') {
    w.bytes(9, bytesOf(data.array));
  } else {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `initializer "${name}" lives in ${data.path}; serialise with an externalize() that places it`,
    );
  }
  return w;
}

function valueInfo(t: Tensor, name: string): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of t.shape)
    shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d) : new ProtoWriter().string(2, d));
  const tensorType = new ProtoWriter().int(1, ONNX_DTYPE[t.dtype]).message(2, shape);
  return new ProtoWriter().string(1, name).message(2, new ProtoWriter().message(1, tensorType));
}

type NameOf = (t: Tensor) => string;

function attribute(name: string, v: number | number[] | string | AttrTensor | AttrGraph, nameOf: NameOf): ProtoWriter {
  const w = new ProtoWriter().string(1, name);
  if (typeof v === 'string') return w.bytes(4, new TextEncoder().encode(v)).int(20, 3);
  if (typeof v === 'number') return FLOAT_ATTRS.has(name) ? w.float(2, v).int(20, 1) : w.int(3, v).int(20, 2);
  if (Array.isArray(v)) return w.ints(8, v).int(20, 7);
  if ('nodes' in v) {
    // a body graph: its nodes, its inputs and outputs; what else it reads comes from the enclosing graph by name
    const g = writeNodes(new ProtoWriter(), v.nodes, nameOf).string(2, name);
    for (const t of v.inputs) g.message(11, valueInfo(t, nameOf(t)));
    for (const t of v.outputs) g.message(12, valueInfo(t, nameOf(t)));
    return w.message(6, g).int(20, 5);
  }
  return w
    .message(5, tensorProto('', { dtype: v.dtype, shape: v.dims }, { kind: 'array', array: v.data }, {}))
    .int(20, 4);
}

/**
 * `graph.output` names an output with an Identity node, which ORT runs as a copy (a KV cache output is tens of MB
 * per decode step). Where the Identity reads a node output that nothing else names, the serialiser drops the
 * Identity and writes that node output under the output's name instead.
 */
function outputRenames(graph: Graph): { skip: Set<Node>; rename: Map<Tensor, string> } {
  const skip = new Set<Node>();
  const rename = new Map<Tensor, string>();
  const outputs = new Set(graph.outputs.map((o) => o.tensor));
  for (const { name, tensor } of graph.outputs) {
    const n = tensor.node;
    const src = n?.inputs[0];
    if (
      n?.op !== 'Identity' ||
      n.stopGradient ||
      tensor.name !== name ||
      !src ||
      src.kind !== 'node' ||
      outputs.has(src) ||
      rename.has(src)
    )
      continue;
    skip.add(n);
    rename.set(src, name);
    rename.set(tensor, name);
  }
  return { skip, rename };
}

/** Appends `nodes` to GraphProto writer `g` (field 1), naming each tensor by `nameOf`. */
function writeNodes(g: ProtoWriter, nodes: readonly Node[], nameOf: NameOf): ProtoWriter {
  for (const n of nodes) {
    const nw = new ProtoWriter();
    for (const t of n.inputs) nw.string(1, t ? nameOf(t) : '');
    for (const o of n.outputs) nw.string(2, nameOf(o));
    nw.string(3, n.name).string(4, n.op);
    for (const [k, v] of Object.entries(n.attrs)) nw.message(5, attribute(k, v, nameOf));
    const domain = OPS[n.op].domain;
    if (domain) nw.string(7, domain);
    g.message(1, nw);
  }
  return g;
}

/** Serialises the graph's live part to ONNX bytes. */
export function toOnnx(graph: Graph, opts: OnnxOptions = {}): Uint8Array {
  if (graph.outputs.length === 0)
    throw new LorakitError('LK_GRAPH_INVALID', `graph "${graph.name}" has no outputs; call graph.output(name, tensor)`);
  const { skip, rename } = outputRenames(graph);
  const nodes = graph.liveNodes().filter((n) => !skip.has(n));
  const nameOf = (t: Tensor) => rename.get(t) ?? t.name;
  const g = writeNodes(new ProtoWriter(), nodes, nameOf);
  g.string(2, graph.name);
  for (const { tensor, data } of graph.liveInitializers(nodes)) {
    g.message(5, tensorProto(tensor.name, { dtype: tensor.dtype, shape: tensor.shape as number[] }, data, opts));
  }
  const used = new Set(nodes.flatMap((n) => nodeReads(n).map((t) => t && nameOf(t))));
  for (const t of graph.inputs) if (used.has(t.name)) g.message(11, valueInfo(t, t.name));
  for (const { name, tensor } of graph.outputs) g.message(12, valueInfo(tensor, name));
  const m = new ProtoWriter().int(1, IR_VERSION).string(2, 'lorakit').string(3, '0.1.0');
  if (opts.docString) m.string(6, opts.docString);
  m.message(7, g);
  m.message(8, new ProtoWriter().string(1, '').int(2, OPSET));
  m.message(8, new ProtoWriter().string(1, 'com.microsoft').int(2, 1));
  return m.finish();
}
