"""The built-in `mock` provider: answers without any network call.

Used by the quick start and the tests. The reply text is `mock_response` when the deployment
sets one, else a deterministic sentence about the prompt; usage is Tollgate's token estimate of
the prompt and the reply, so cost grows with what was sent. `mock_latency_ms` delays the answer.
It answers every API in the shape OpenAI does: chat completions, text completions, the Responses
API (plain and streamed) and embeddings.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid

from providers import tokens
from providers.apis import COMPLETIONS, EMBEDDINGS, RESPONSES
from providers.base import Reply, Usage, openai_usage
from providers.http import Upstreams
from providers.streaming import DONE, Stream, saw_response_event, sse, wants_usage


class MockAdapter:
    def reply_text(self, deployment, body: dict) -> str:
        if deployment.mock_response is not None:
            return str(deployment.mock_response)
        prompt = body.get("prompt") if "prompt" in body else body.get("input", body.get("messages"))
        prompt = prompt if isinstance(prompt, str) else tokens.last_user_text(prompt)
        return f"This is a mock response to a prompt of {tokens.count_text(prompt)} tokens."

    def usage(self, body: dict, text: str) -> Usage:
        return Usage(prompt_tokens=tokens.count_prompt(body), completion_tokens=tokens.count_text(text))

    def complete(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Reply:
        if path == EMBEDDINGS:
            return self.embed(deployment, body)
        if deployment.mock_latency_ms:
            time.sleep(deployment.mock_latency_ms / 1000)
        text = self.reply_text(deployment, body)
        usage = self.usage(body, text)
        if path == RESPONSES:
            return Reply(body=_response(deployment, text, usage, f"resp_{uuid.uuid4().hex}"), usage=usage)
        if path == COMPLETIONS:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
            reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                     "model": deployment.model, "choices": [choice], "usage": _plain_usage(usage)}  # fmt: skip
            return Reply(body=reply, usage=usage)
        reply = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": _plain_usage(usage),
        }
        return Reply(body=reply, usage=usage)

    def stream(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Stream:
        """The reply word by word, as OpenAI streams it on that API, usage last."""
        text = self.reply_text(deployment, body)
        words = re.findall(r"\S+\s*", text) or [text]
        if path == RESPONSES:
            return self._response_stream(deployment, body, text, words)
        answer_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        stream = Stream(())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            if path == COMPLETIONS:
                choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
                return {"id": answer_id, "object": "text_completion", "created": created, "model": deployment.model,
                        "choices": [choice]}  # fmt: skip
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {"id": answer_id, "object": "chat.completion.chunk", "created": created,
                    "model": deployment.model, "choices": [choice]}  # fmt: skip

        def events():
            if deployment.mock_latency_ms:
                time.sleep(deployment.mock_latency_ms / 1000)
            if path != COMPLETIONS:
                yield sse(chunk({"role": "assistant", "content": ""}))
            for word in words:
                stream.saw(chunk({"content": word}))
                yield sse(chunk({"content": word}))
            yield sse(chunk({}, "stop"))
            stream.usage = self.usage(body, text)
            if wants_usage(body):
                yield sse({**chunk({}), "choices": [], "usage": openai_usage(stream.usage)})
            yield DONE

        stream._events = events()
        return stream

    def _response_stream(self, deployment, body: dict, text: str, words: list[str]) -> Stream:
        """A Responses API stream: created, the text deltas, completed (with the usage)."""
        answer_id = f"resp_{uuid.uuid4().hex}"
        stream = Stream(())

        def event(kind: str, **fields) -> bytes:
            payload = {"type": kind, **fields}
            saw_response_event(stream, kind, payload)
            return f"event: {kind}\n".encode() + sse(payload)

        def events():
            if deployment.mock_latency_ms:
                time.sleep(deployment.mock_latency_ms / 1000)
            yield event("response.created", response=_response(deployment, "", None, answer_id, "in_progress"))
            for word in words:
                yield event("response.output_text.delta", item_id=f"msg_{answer_id}", output_index=0,
                            content_index=0, delta=word)  # fmt: skip
            usage = self.usage(body, text)
            yield event("response.completed", response=_response(deployment, text, usage, answer_id))

        stream._events = events()
        return stream

    def embed(self, deployment, body: dict) -> Reply:
        """A deterministic unit vector per input, from a hash of its text."""
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for index, item in enumerate(inputs):
            digest = hashlib.sha256(str(item).encode()).digest()
            vector = [(byte - 127.5) / 127.5 for byte in digest[:16]]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        prompt = sum(tokens.count_text(str(item)) for item in inputs)
        reply = {"object": "list", "data": data, "model": deployment.model,
                 "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}  # fmt: skip
        return Reply(body=reply, usage=Usage(prompt_tokens=prompt))


def _plain_usage(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _response(deployment, text: str, usage: Usage | None, answer_id: str, status: str = "completed") -> dict:
    """A Responses API `response` object with one output message."""
    output = []
    if text:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output = [{"type": "message", "id": f"msg_{answer_id}", "status": "completed", "role": "assistant",
                   "content": content}]  # fmt: skip
    answer = {"id": answer_id, "object": "response", "created_at": int(time.time()), "status": status,
              "model": deployment.model, "output": output, "usage": None}  # fmt: skip
    if usage is not None:
        answer["usage"] = {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens,
        }
    return answer
