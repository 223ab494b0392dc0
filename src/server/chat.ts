/**
 * POST /v1/chat/completions: the conversation is rendered with the chat template of the adapter named by `model`
 * when its folder ships one (as LoRAX does), else the base model's (or the server's --chat-template), and tokenised
 * without adding special tokens (the template writes them, as transformers' apply_chat_template). Streamed chunks
 * carry `delta: {role}` first, then `delta: {content}`; `logprobs: true` with `top_logprobs` reports them in
 * OpenAI's chat shape. Without a limit, a reply may take the rest of the model's length.
 * Not here: the sampling fields (generation.ts), templates themselves (io/chat.ts).
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { LorakitError } from '../errors.ts';
import { type ChatMessage, renderChat, tokenContent } from '../io/index.ts';
import type { TokenLogprob } from '../serve/index.ts';
import { adapterOf, answer, engineRequest, finishReason, type ServerState } from './generation.ts';
import { type ChatBody, chatBody, parseBody } from './schemas.ts';

/** Mounts POST /v1/chat/completions. */
export function mountChat(app: FastifyInstance, state: ServerState): void {
  app.post('/v1/chat/completions', async (request, reply) => {
    const body = parseBody(chatBody, request.body);
    const adapter = adapterOf(state, body.model);
    const pool = state.engine.parts.adapters;
    // the adapter is held while its template is read and the request runs (the engine pins it again)
    const resident = adapter === null ? null : await pool.acquire(adapter);
    try {
      const template = resident?.chatTemplate ?? state.chatTemplate;
      if (template === undefined) {
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `model "${body.model}" has no chat template; start the server with --chat-template <file>, or use ` +
            '/v1/completions',
          { param: 'messages' },
        );
      }
      const ids = chatIds(state, template, body.messages);
      const { maxModelLen, maxTokens } = state.engine.parts.limits;
      const asked = body.max_completion_tokens ?? body.max_tokens;
      const limit = asked ?? Math.max(1, Math.min(maxTokens, maxModelLen - ids.length));
      const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : null;
      const lp = (l: readonly TokenLogprob[] | null) =>
        l === null
          ? null
          : {
              content: l.map((t) => ({
                token: t.token,
                logprob: t.logprob,
                bytes: t.bytes,
                top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })),
              })),
            };
      return await answer(
        state,
        request,
        reply,
        body,
        (extra) => engineRequest(body, ids, adapter, limit, { ...extra, logprobs }),
        1,
        {
          id: `chatcmpl-${randomUUID()}`,
          object: 'chat.completion',
          chunkObject: 'chat.completion.chunk',
          chunk: (index, e, first) => ({
            index,
            delta: first ? { role: 'assistant', content: e.text } : e.text ? { content: e.text } : {},
            logprobs: logprobs === null ? null : lp(e.logprobs),
            finish_reason: finishReason(e.finishReason),
          }),
          choice: (index, c) => ({
            index,
            message: { role: 'assistant', content: c.text },
            logprobs: lp(c.logprobs),
            finish_reason: finishReason(c.finishReason),
          }),
        },
      );
    } finally {
      if (resident) pool.unpin(resident.name);
    }
  });
}

/** Renders and tokenises the conversation. */
function chatIds(state: ServerState, template: string, messages: ChatBody['messages']): number[] {
  const msgs: ChatMessage[] = messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
  const cfg = state.tokenizer.config as Record<string, unknown>;
  const text = renderChat(template, msgs, {
    addGenerationPrompt: true,
    bosToken: tokenContent(cfg.bos_token) ?? '',
    eosToken: tokenContent(cfg.eos_token) ?? '',
  });
  return state.tokenizer.encode(text, { addSpecialTokens: false });
}
