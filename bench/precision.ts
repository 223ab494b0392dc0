/**
 * What ORT's CPU EP offers below float32 on this machine: the 2048³ product of `npm run bench`'s peak in float32,
 * float16, bfloat16, and int8 (MatMulInteger u8·s8 → i32, and com.microsoft DynamicQuantizeMatMul: float32 in, int8
 * weights, the activations quantized on the fly), and MatMulNBits (8- and 4-bit weight blocks, the quantized bases' kernel). Prints a table and writes bench/results/precision.json; a dtype
 * with no CPU kernel is reported as such. The models are written with onnx-proto (a dev dependency), not with
 * lorakit's graph builder, whose op table has no integer matmuls.
 *   node --import tsx bench/precision.ts [--threads N]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import ort from 'onnxruntime-node';
import { RESULTS, ensureVenv, runPeft, table } from './common.ts';
import { matmulWorkload } from './workloads.ts';

const { onnx } = onnxProto;
const T = onnx.TensorProto.DataType;
const n = 2048;

interface Case {
  name: string;
  op: string;
  domain?: string;
  a: number;
  y: number;
  b: { type: number; raw: Uint8Array; dims?: number[] };
  attrs?: Record<string, number>;
  extra?: { name: string; type: number; dims: number[]; raw: Uint8Array }[];
  feed: () => ort.Tensor;
}

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const fill16 = (bits: number) => bytes(new Uint16Array(n * n).fill(bits));
const cases: Case[] = [
  {
    name: 'float32 MatMul',
    op: 'MatMul',
    a: T.FLOAT,
    y: T.FLOAT,
    b: { type: T.FLOAT, raw: bytes(new Float32Array(n * n).fill(0.25)) },
    feed: () => new ort.Tensor('float32', new Float32Array(n * n).fill(0.5), [n, n]),
  },
  {
    name: 'float16 MatMul',
    op: 'MatMul',
    a: T.FLOAT16,
    y: T.FLOAT16,
    b: { type: T.FLOAT16, raw: fill16(0x3400) },
    feed: () => new ort.Tensor('float16', new Uint16Array(n * n).fill(0x3800), [n, n]),
  },
  {
    name: 'bfloat16 MatMul',
    op: 'MatMul',
    a: T.BFLOAT16,
    y: T.BFLOAT16,
    b: { type: T.BFLOAT16, raw: fill16(0x3e80) },
    feed: () => new ort.Tensor('bfloat16' as 'float16', new Uint16Array(n * n).fill(0x3f00), [n, n]),
  }, // ORT types lack 'bfloat16'
  {
    name: 'int8 MatMulInteger (u8·s8 → i32)',
    op: 'MatMulInteger',
    a: T.UINT8,
    y: T.INT32,
    b: { type: T.INT8, raw: new Uint8Array(n * n).fill(3) },
    feed: () => new ort.Tensor('uint8', new Uint8Array(n * n).fill(7), [n, n]),
  },
  {
    name: 'int8 DynamicQuantizeMatMul (f32 in, int8 weights)',
    op: 'DynamicQuantizeMatMul',
    domain: 'com.microsoft',
    a: T.FLOAT,
    y: T.FLOAT,
    b: { type: T.INT8, raw: new Uint8Array(n * n).fill(3) },
    extra: [{ name: 's', type: T.FLOAT, dims: [n], raw: bytes(new Float32Array(n).fill(0.01)) }],
    feed: () => new ort.Tensor('float32', new Float32Array(n * n).fill(0.5), [n, n]),
  },
  ...([8, 4] as const).flatMap((bits) =>
    ([4, 0] as const).map(
      (level): Case => ({
        // lorakit's quantized bases: weights in blocks of 32 along K; level 4 quantizes the input per block to int8
        name: `${bits}-bit MatMulNBits, blocks of 32, accuracy_level ${level}`,
        op: 'MatMulNBits',
        domain: 'com.microsoft',
        a: T.FLOAT,
        y: T.FLOAT,
        b: { type: T.UINT8, raw: new Uint8Array((n * n * bits) / 8).fill(0x9a), dims: [n, n / 32, (32 * bits) / 8] },
        attrs: { K: n, N: n, bits, block_size: 32, accuracy_level: level },
        extra: [
          { name: 's', type: T.FLOAT, dims: [(n * n) / 32], raw: bytes(new Float32Array((n * n) / 32).fill(0.01)) },
        ],
        feed: () => new ort.Tensor('float32', new Float32Array(n * n).fill(0.5), [n, n]),
      }),
    ),
  ),
];

function model(c: Case): Uint8Array {
  const i64 = (name: string, v: number) => ({
    name,
    dataType: T.INT64,
    dims: [1],
    rawData: bytes(BigInt64Array.of(BigInt(v))),
  });
  const init = [
    { name: 'b', dataType: c.b.type, dims: c.b.dims ?? [n, n], rawData: c.b.raw },
    ...(c.extra ?? []).map((e) => ({ name: e.name, dataType: e.type, dims: e.dims, rawData: e.raw })),
    i64('zero', 0),
    i64('one', 1),
  ];
  const value = (name: string, elemType: number, rows: number) => ({
    name,
    type: { tensorType: { elemType, shape: { dim: [{ dimValue: rows }, { dimValue: n }] } } },
  });
  const m = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [
      { domain: '', version: 18 },
      { domain: 'com.microsoft', version: 1 },
    ],
    graph: {
      name: c.op,
      initializer: init,
      input: [value('a', c.a, n)],
      output: [value('y', c.y, 1)],
      node: [
        {
          opType: c.op,
          domain: c.domain ?? '',
          input: ['a', 'b', ...(c.extra ?? []).map((e) => e.name)],
          output: ['product'],
          attribute: Object.entries(c.attrs ?? {}).map(([name, i]) => ({
            name,
            type: onnx.AttributeProto.AttributeType.INT,
            i,
          })),
        },
        { opType: 'Slice', input: ['product', 'zero', 'one', 'zero'], output: ['y'] }, // one row out: only the product is timed
      ],
    },
  });
  return onnx.ModelProto.encode(m).finish();
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--threads');
  const threads = i > 0 ? Number(process.argv[i + 1]) : availableParallelism();
  const rows: { name: string; gops: number | null; note: string }[] = [];
  for (const c of cases) {
    let s: ort.InferenceSession;
    try {
      s = await ort.InferenceSession.create(model(c), { intraOpNumThreads: threads, interOpNumThreads: 1 });
    } catch (e) {
      rows.push({ name: c.name, gops: null, note: `no CPU kernel (${String(e).split('\n')[0].slice(0, 90)})` });
      continue;
    }
    const a = c.feed();
    let best = Infinity;
    for (let r = 0; r < 12; r++) {
      const t = performance.now();
      await s.run({ a });
      if (r >= 2) best = Math.min(best, performance.now() - t);
    }
    await s.release();
    rows.push({ name: c.name, gops: (2 * n ** 3) / best / 1e6, note: `${best.toFixed(1)} ms per product` });
    console.log(`${c.name}: ${best.toFixed(1)} ms`);
  }
  // torch on the same machine, for scale: float32 (MKL) and bfloat16 (oneDNN, AMX where present).
  await ensureVenv();
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const w = { ...matmulWorkload({ threads } as Parameters<typeof matmulWorkload>[0]), dtype };
    const r = await runPeft(w);
    rows.push({
      name: `torch ${dtype} mm (for comparison)`,
      gops: r.gflops,
      note: `${r.msPerStep.toFixed(1)} ms per product (preallocated output)`,
    });
  }
  console.log(table([['2048³ product', 'G(FL)OP/s', 'note'], ...rows.map((r) => [r.name, r.gops ?? '—', r.note])]));
  mkdirSync(RESULTS, { recursive: true });
  const out = join(RESULTS, 'precision.json');
  writeFileSync(
    out,
    `${JSON.stringify({ date: new Date().toISOString(), cpu: cpus()[0]?.model, threads, rows }, null, 2)}\n`,
  );
  console.log(`\nwrote ${out}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
