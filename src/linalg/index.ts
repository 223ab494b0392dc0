// linalg/: host-side matrix helpers and seeded random initialisers.
export { matmul, transpose, rowNorms, axpy } from './matrix.ts';
export { Rng, seedFrom, kaimingUniformBound, mulberry32, mulberry32Step } from './random.ts';
