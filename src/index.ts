// lorakit's public surface: one namespace per layer (ARCHITECTURE.md), plus the error type every layer throws.
export * as graph from './graph/index.ts';
export * as runtime from './runtime/index.ts';
export * as optim from './optim/index.ts';
export * as io from './io/index.ts';
export * as linalg from './linalg/index.ts';
export * as nn from './nn/index.ts';
export * as models from './models/index.ts';
export * as peft from './peft/index.ts';
export * as train from './train/index.ts';
export * as federated from './federated/index.ts';
export * as diffusion from './diffusion/index.ts';
export * as adaptive from './adaptive/index.ts';
export { LorakitError, ERROR_CODES, type ErrorCode } from './errors.ts';
