/**
 * Mends an optimized model that ONNX Runtime 1.30 saved: it writes each initializer of a subgraph (a Scan's body,
 * after constant folding there) twice, then refuses to load the file ("initializer name is not unique").
 * onnxruntime-node 1.31.1 writes each once, but refuses such a file just the same. Keeps the first of each name in
 * every subgraph; every other byte is copied as it was.
 */
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

// the fields on the way from a ModelProto down to its subgraphs (onnx.proto)
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const NODE_ATTRIBUTE = 5;
const ATTR_GRAPH = 6;
const ATTR_GRAPHS = 11;
const TENSOR_NAME = 8;
type Kind = 'model' | 'graph' | 'subgraph' | 'node' | 'attribute';
const INTO: Record<Kind, Record<number, Kind>> = {
  model: { [MODEL_GRAPH]: 'graph' },
  graph: { [GRAPH_NODE]: 'node' },
  subgraph: { [GRAPH_NODE]: 'node' },
  node: { [NODE_ATTRIBUTE]: 'attribute' },
  attribute: { [ATTR_GRAPH]: 'subgraph', [ATTR_GRAPHS]: 'subgraph' },
};

/** The model with each subgraph's repeated initializers dropped, or the same bytes when there are none. */
export function dedupeSubgraphInitializers(model: Uint8Array): Uint8Array {
  return rewrite(model, 'model') ?? model;
}

function tensorName(proto: Uint8Array): string | undefined {
  const r = new BinaryReader(proto);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === TENSOR_NAME && wire === WireType.LengthDelimited) return r.string();
    r.skip(wire, field);
  }
  return undefined;
}

/** The message rewritten, or null when nothing in it changes. */
function rewrite(bytes: Uint8Array, kind: Kind): Uint8Array | null {
  const r = new BinaryReader(bytes);
  const w = new BinaryWriter();
  const seen = new Set<string>();
  let changed = false;
  while (r.pos < r.len) {
    const start = r.pos;
    const [field, wire] = r.tag();
    const inner = INTO[kind][field];
    if (wire !== WireType.LengthDelimited || (!inner && !(kind === 'subgraph' && field === GRAPH_INITIALIZER))) {
      r.skip(wire, field);
      w.raw(bytes.subarray(start, r.pos));
      continue;
    }
    const payload = r.bytes();
    if (!inner) {
      const name = tensorName(payload);
      if (name !== undefined && seen.has(name)) {
        changed = true;
        continue;
      }
      if (name !== undefined) seen.add(name);
      w.raw(bytes.subarray(start, r.pos));
      continue;
    }
    const mended = rewrite(payload, inner);
    if (mended) changed = true;
    w.tag(field, WireType.LengthDelimited).bytes(mended ?? payload);
  }
  return changed ? w.finish() : null;
}
