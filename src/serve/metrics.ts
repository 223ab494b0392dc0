/**
 * The engine's counters and latency histograms, and their Prometheus text exposition (format 0.0.4). Metric names
 * follow vLLM's (`vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`, `vllm:lora_requests_info`, ...), because
 * the routers that balance OpenAI-compatible replicas read those names by default (the Gateway API Inference
 * Extension's model-server protocol lists them); lorakit's own extras are prefixed `lorakit_`.
 * Not here: where the numbers come from (engine.ts), the HTTP route (server/metrics.ts).
 */
import type { FinishReason } from './sequence.ts';

/** Upper bounds (seconds) of the latency histograms' buckets. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80];

/** A cumulative histogram, as Prometheus counts it. */
export class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: readonly number[] = LATENCY_BUCKETS) {
    this.counts = new Array<number>(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    this.buckets.forEach((b, i) => {
      if (v <= b) this.counts[i]++;
    });
  }
}

/** What the engine counts. */
export class EngineMetrics {
  promptTokens = 0;
  generationTokens = 0;
  /** Finished requests by finish reason of their first completion. */
  readonly requests: Record<FinishReason, number> = { eos: 0, stop: 0, length: 0, abort: 0 };
  /** Requests refused for a full engine (429). */
  rejected = 0;
  /** Steps whose run failed (their requests failed). */
  stepErrors = 0;
  readonly steps = { prefill: 0, decode: 0 };
  /** Rows over all decode steps (mean batch = decodeRows / steps.decode). */
  decodeRows = 0;
  readonly ttft = new Histogram();
  readonly e2e = new Histogram();
  readonly queue = new Histogram();
  readonly perToken = new Histogram();

  /** Counts a finished request. */
  finished(
    choices: readonly { finishReason: FinishReason; tokenIds: readonly number[] }[],
    promptTokens: number,
    completionTokens: number,
    t: { queuedMs: number; firstTokenMs: number; totalMs: number },
  ): void {
    void promptTokens; // counted at prefill, when the prompt is processed
    this.generationTokens += completionTokens;
    this.requests[choices[0]?.finishReason ?? 'abort']++;
    this.queue.observe(t.queuedMs / 1000);
    this.ttft.observe(t.firstTokenMs / 1000);
    this.e2e.observe(t.totalMs / 1000);
    const longest = Math.max(0, ...choices.map((c) => c.tokenIds.length));
    if (longest > 1) this.perToken.observe((t.totalMs - t.firstTokenMs) / 1000 / (longest - 1));
  }
}

/** The gauges read at scrape time. */
export interface MetricsSnapshot {
  model: string;
  running: number;
  waiting: number;
  /** KV tokens in use / capacity. */
  kvUsed: number;
  kvCapacity: number;
  /** Adapter slots (vLLM's max_loras) and the adapters of running and waiting requests. */
  maxLoras: number;
  runningAdapters: string[];
  waitingAdapters: string[];
  residentAdapters: number;
  adapterBytes: number;
}

/** Prometheus text exposition of the metrics and the snapshot. */
export function prometheusText(m: EngineMetrics, s: MetricsSnapshot): string {
  const lines: string[] = [];
  const label = (o: Record<string, string>) =>
    `{${Object.entries(o)
      .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
      .join(',')}}`;
  const model = { model_name: s.model };
  const metric = (name: string, type: string, help: string, values: [Record<string, string>, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of values) lines.push(`${name}${label(l)} ${v}`);
  };
  const hist = (name: string, help: string, h: Histogram) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    h.buckets.forEach((b, i) => lines.push(`${name}_bucket${label({ ...model, le: String(b) })} ${h.counts[i]}`));
    lines.push(`${name}_bucket${label({ ...model, le: '+Inf' })} ${h.count}`);
    lines.push(`${name}_sum${label(model)} ${h.sum}`, `${name}_count${label(model)} ${h.count}`);
  };
  metric('vllm:num_requests_running', 'gauge', 'Requests in the running batch.', [[model, s.running]]);
  metric('vllm:num_requests_waiting', 'gauge', 'Requests waiting for admission.', [[model, s.waiting]]);
  metric('vllm:kv_cache_usage_perc', 'gauge', 'KV-cache usage (1 = full).', [[model, s.kvUsed / s.kvCapacity]]);
  metric('vllm:cache_config_info', 'gauge', 'KV-cache layout: token-granular pages.', [
    [{ block_size: '1', num_gpu_blocks: String(s.kvCapacity) }, 1],
  ]);
  metric('vllm:lora_requests_info', 'gauge', 'Adapters of running and waiting requests (value: timestamp).', [
    [
      {
        max_lora: String(s.maxLoras),
        running_lora_adapters: s.runningAdapters.join(','),
        waiting_lora_adapters: s.waitingAdapters.join(','),
      },
      Date.now() / 1000,
    ],
  ]);
  metric('vllm:prompt_tokens_total', 'counter', 'Prompt tokens prefilled.', [[model, m.promptTokens]]);
  metric('vllm:generation_tokens_total', 'counter', 'Tokens generated.', [[model, m.generationTokens]]);
  metric(
    'vllm:request_success_total',
    'counter',
    'Finished requests by finish reason.',
    Object.entries(m.requests).map(
      ([k, v]) => [{ ...model, finished_reason: k }, v] as [Record<string, string>, number],
    ),
  );
  hist('vllm:time_to_first_token_seconds', 'Time to the first token.', m.ttft);
  hist('vllm:e2e_request_latency_seconds', 'Request latency.', m.e2e);
  hist('vllm:request_queue_time_seconds', 'Time waiting (adapter load and queue).', m.queue);
  hist('vllm:time_per_output_token_seconds', 'Time per output token after the first.', m.perToken);
  metric('lorakit_requests_rejected_total', 'counter', 'Requests refused with 429.', [[model, m.rejected]]);
  metric('lorakit_step_errors_total', 'counter', 'Engine steps that failed.', [[model, m.stepErrors]]);
  metric('lorakit_steps_total', 'counter', 'Engine steps by kind.', [
    [{ ...model, kind: 'prefill' }, m.steps.prefill],
    [{ ...model, kind: 'decode' }, m.steps.decode],
  ]);
  metric('lorakit_decode_rows_total', 'counter', 'Rows over all decode steps.', [[model, m.decodeRows]]);
  metric('lorakit_adapters_resident', 'gauge', 'Adapters held in memory.', [[model, s.residentAdapters]]);
  metric('lorakit_adapter_memory_bytes', 'gauge', 'Bytes of resident adapters.', [[model, s.adapterBytes]]);
  return `${lines.join('\n')}\n`;
}
