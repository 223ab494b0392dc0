// runtime/: ONNX Runtime sessions shared by graph structure (in this thread or a worker), feed validation, and the
// session cache in memory (runtime.ts) and on disk (disk-cache.ts).
export { Session, validateFeeds, runtimeError, type Feed, type HostTensor, type SharedSession } from './session.ts';
export {
  compile,
  shutdownRuntime,
  defaultRuntime,
  Runtime,
  type CompileOptions,
  type RuntimeOptions,
  type RuntimeStats,
} from './runtime.ts';
export {
  SESSION_CACHE_LIMITS,
  sessionCacheInfo,
  sweepSessionCache,
  clearSessionCache,
  type SessionCacheInfo,
  type SessionCacheLimits,
} from './disk-cache.ts';
