"""The built-in `mock` provider: answers without any network call.

Used by the quick start and the tests. The reply text is `mock_response` when the deployment
sets one, else a deterministic sentence about the prompt; usage is Tollgate's token estimate of
the prompt and the reply, so cost grows with what was sent. `mock_latency_ms` delays the answer.
"""

from __future__ import annotations

import time
import uuid

from providers import tokens
from providers.base import Reply, SessionPool, Usage


class MockAdapter:
    def reply_text(self, deployment, body: dict) -> str:
        if deployment.mock_response is not None:
            return str(deployment.mock_response)
        prompt = tokens.last_user_text(body.get("messages"))
        return f"This is a mock response to a prompt of {tokens.count_text(prompt)} tokens."

    def complete(self, http: SessionPool, deployment, body: dict, path: str = "chat/completions") -> Reply:
        if deployment.mock_latency_ms:
            time.sleep(deployment.mock_latency_ms / 1000)
        text = self.reply_text(deployment, body)
        usage = Usage(
            prompt_tokens=tokens.count_messages(body.get("messages")),
            completion_tokens=tokens.count_text(text),
        )
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
