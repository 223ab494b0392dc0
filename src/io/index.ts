// Public surface of src/io: file formats and safe writes. Other folders import from here, not from the files.
export {
  f16ToF32,
  f32ToF16,
  bf16ToF32,
  f32ToBf16,
  f16BitsToNumber,
  numberToF16Bits,
  bf16BitsToNumber,
  numberToBf16Bits,
} from './half.ts';
export { writeFileAtomic, tempPathFor, syncDir } from './atomic.ts';
export { fsError, isSystemError, withFsErrors } from './fs-error.ts';
export type { FsAction, SystemError } from './fs-error.ts';
export { requireFolder, checkOutputFolder, ensureFolder, realPathOf, isWithin } from './folder.ts';
export type { FolderOptions } from './folder.ts';
export { lockFolder, LOCK_FILE } from './lock.ts';
export type { FolderLock, LockHolder } from './lock.ts';
export { lorakitCacheRoot, lorakitCacheDir } from './cache-root.ts';
export type { CacheKind, CacheRootContext } from './cache-root.ts';
export { hfHubCacheDir, isHubId, resolveModelDir } from './hub.ts';
export type { ResolveModelDirOptions } from './hub.ts';
export type { AtomicData, AtomicWriteOptions } from './atomic.ts';
export {
  DTYPE_BYTES,
  MAX_HEADER_BYTES,
  isSupportedDType,
  readHeaderLength,
  parseHeader,
  canReadAs,
  checkReadAs,
  decodeTensor,
  SafetensorsFile,
  SafetensorsBuffer,
  planSafetensors,
  encodeSafetensors,
  writeSafetensors,
} from './safetensors.ts';
export type {
  SafetensorsDType,
  TensorInfo,
  SafetensorsHeader,
  ReadType,
  ReadTypeMap,
  WeightsReader,
  TensorData,
  TensorToWrite,
  TensorsToWrite,
} from './safetensors.ts';
export { openWeights, ShardedWeights } from './sharded.ts';
export type { OpenWeightsOptions } from './sharded.ts';
export {
  SUPPORTED_MODEL_TYPES,
  parseModelConfig,
  loadModelConfig,
  validateConfig,
  readJsonFile,
  parseJsonText,
} from './config.ts';
export type { ModelType, ModelConfig, Gpt2Config, LlamaLikeConfig, BertConfig, RopeScaling } from './config.ts';
export { HfTokenizer, tokenContent, gpt2TokenizerJson, bertTokenizerJson } from './tokenizer.ts';
export type {
  EncodeOptions,
  EncodeBatchOptions,
  BatchEncoding,
  DecodeOptions,
  HfTokenizerOptions,
  StreamDecoder,
  AddedTokenInfo,
  BackendTokenizer,
} from './tokenizer.ts';
export { renderChat, encodeChat, chatTemplateFromConfig, findChatTemplate, loadChatTemplate } from './chat.ts';
export type { ChatMessage, RenderChatOptions, EncodeChatOptions, ChatEncoding } from './chat.ts';
export { loadHfFolder, parseGenerationConfig } from './hf.ts';
export type { HfFolder, LoadHfFolderOptions, GenerationConfig } from './hf.ts';
export { GgufFile, parseGguf, GGUF_VALUE_TYPES } from './gguf.ts';
export type { GgufHeader, GgufKv, GgufScalar, GgufTensorInfo, GgufValueType } from './gguf.ts';
export { GGML_TYPES, DEQUANTIZABLE, dequantize, ggmlByteLength, ggmlTypeByName, quantizeQ8_0 } from './gguf-quants.ts';
export type { GgmlType } from './gguf-quants.ts';
export {
  ggufModelFolder,
  ggufConfig,
  ggufHfTensors,
  ggufTensorName,
  hfTensorName,
  isGgufPath,
  permuteRotaryRows,
  resolveModelFolder,
  GGUF_ARCHITECTURES,
} from './gguf-model.ts';
export type { GgufFolderOptions } from './gguf-model.ts';
export { ggufTokenizerFiles } from './gguf-tokenizer.ts';
export { encodeGguf, writeGguf } from './gguf-write.ts';
export type { GgufTensorToWrite } from './gguf-write.ts';
