// linalg/: host-side matrix helpers and seeded random initialisers (lorakit's own, and torch's CPU stream).
export { matmul, transpose, rowNorms, axpy } from './matrix.ts';
export { Rng, seedFrom, kaimingUniformBound, mulberry32, mulberry32Step } from './random.ts';
export { TorchGenerator } from './torch-random.ts';
