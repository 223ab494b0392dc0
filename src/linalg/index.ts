// linalg/: host-side matrix helpers, seeded random initialisers (lorakit's own, torch's CPU stream, numpy's
// default_rng) and the
// decompositions of initialisations (QR, symmetric eigen, SVD, randomized SVD, LU).
export { matmul, transpose, rowNorms, axpy } from './matrix.ts';
export { Rng, seedFrom, kaimingUniformBound, mulberry32, mulberry32Step } from './random.ts';
export { mm, transposeF64, type RealArray } from './dense.ts';
export { qr, qrPivoted, type Qr, type PivotedQr, type PivotedQrOptions } from './qr.ts';
export {
  symEig,
  spdInverse,
  solveSylvester,
  type SymEig,
  type SpdInverseOptions,
  type SylvesterOptions,
} from './eig.ts';
export { svd, pinv, type Svd } from './svd.ts';
export { svdOfProduct } from './svd-product.ts';
export { selectInPlace } from './select.ts';
export { svdTop, type SvdTop, type SvdTopOptions } from './svd-top.ts';
export { lu, type Lu, type LuOptions } from './lu.ts';
export { svdLowrank, type SvdLowrankOptions } from './rsvd.ts';
export { TorchGenerator, roundBf16, roundBf16Array } from './torch-random.ts';
export { NumpyGenerator } from './numpy-random.ts';
