// linalg/: host-side matrix helpers and seeded random initialisers.
export { matmul, transpose, rowNorms, axpy } from './matrix.ts';
export { Rng, seedFrom, kaimingUniformBound } from './random.ts';
