// federated/: lorakit as a Flower client. The Fleet API of the pinned Flower version (types generated from its
// .proto files under proto/), its object codec and request signing, the node loop, and the lorakit node that trains
// an adapter each round. Aggregation runs in Flower's ServerApp (interop/flower_app, Python).
export { FLOWER_VERSION, fleetCall, type RetryOptions, type TransportOptions } from './transport.ts';
export {
  type NodeIdentity,
  generateIdentity,
  exportIdentity,
  openSshPublicKey,
  importIdentity,
  loadOrCreateIdentity,
  signedHeaders,
} from './signing.ts';
export { FleetSession, type FleetSessionOptions, type PushResult } from './fleet.ts';
export { type FlowerMessage, type DeflatedMessage, deflateMessage, inflateMessage, replyMetadata } from './message.ts';
export {
  type RecordDict,
  type FlowerRecord,
  type MetricValue,
  type ConfigValue,
  MAX_ARRAY_CHUNK,
  metricRecord,
  recordDict,
} from './records.ts';
export { type WireDType, type WireTensor, encodeNpy, decodeNpy } from './npy.ts';
export { runFleetClient, type FleetClientOptions, type FleetClientSummary, type MessageHandler } from './client.ts';
export { runLoraClient, type LoraClientOptions, type LoraClientResult, type LoraRoundRecord } from './lora-client.ts';
