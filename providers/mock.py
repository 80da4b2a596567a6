"""The built-in `mock` provider: answers without any network call.

Used by the quick start and the tests. The reply text is `mock_response` when the deployment
sets one, else a deterministic sentence about the prompt; usage is Tollgate's token estimate of
the prompt and the reply, so cost grows with what was sent. `mock_latency_ms` delays the answer.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid

from providers import tokens
from providers.base import Reply, Usage, openai_usage
from providers.http import Upstreams
from providers.streaming import DONE, Stream, sse, wants_usage


class MockAdapter:
    def reply_text(self, deployment, body: dict) -> str:
        if deployment.mock_response is not None:
            return str(deployment.mock_response)
        prompt = tokens.last_user_text(body.get("messages"))
        return f"This is a mock response to a prompt of {tokens.count_text(prompt)} tokens."

    def usage(self, body: dict, text: str) -> Usage:
        return Usage(
            prompt_tokens=tokens.count_messages(body.get("messages")), completion_tokens=tokens.count_text(text)
        )

    def complete(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Reply:
        if path == "embeddings":
            return self.embed(deployment, body)
        if deployment.mock_latency_ms:
            time.sleep(deployment.mock_latency_ms / 1000)
        text = self.reply_text(deployment, body)
        usage = self.usage(body, text)
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
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
        return Reply(body=reply, usage=usage)

    def stream(self, http: Upstreams, deployment, body: dict, path: str = "chat/completions") -> Stream:
        """The reply word by word as `chat.completion.chunk` events, usage last."""
        text = self.reply_text(deployment, body)
        words = re.findall(r"\S+\s*", text) or [text]
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        stream = Stream(())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                    "model": deployment.model, "choices": [choice]}  # fmt: skip

        def events():
            if deployment.mock_latency_ms:
                time.sleep(deployment.mock_latency_ms / 1000)
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
