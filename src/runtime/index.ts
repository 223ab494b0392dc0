// runtime/: ONNX Runtime sessions (in a worker thread by default), feed validation, the compile cache.
export {
  compile,
  shutdownRuntime,
  Session,
  validateFeeds,
  runtimeError,
  type CompileOptions,
  type Feed,
  type HostTensor,
} from './session.ts';
