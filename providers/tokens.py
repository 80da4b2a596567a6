"""Tollgate's own token estimate, for answers it makes itself (`mock`) or that carry no usage.

It is a deterministic approximation of a BPE tokenizer: words split into pieces of at most four
characters, each punctuation mark one token, plus a small per-message overhead as OpenAI counts
for chat formatting. It is honest (it grows with the text), not exact for any given model.
"""

from __future__ import annotations

import re
from typing import Any

_PIECES = re.compile(r"\w{1,4}|[^\w\s]")
MESSAGE_OVERHEAD = 3
REPLY_OVERHEAD = 3


def count_text(text: str) -> int:
    """Estimated tokens in a piece of text."""
    return len(_PIECES.findall(text))


def count_messages(messages: Any) -> int:
    """Estimated prompt tokens of a chat `messages` list (text parts only)."""
    if not isinstance(messages, list):
        return 0
    total = REPLY_OVERHEAD
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD + count_text(_text_of(message.get("content")))
    return total


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt(body: dict) -> int:
    """Estimated prompt tokens of a request on any API: chat `messages`, a Responses API `input`
    and `instructions`, a text completion's `prompt`, an embedding's `input`."""
    total = count_messages(body.get("messages")) if isinstance(body.get("messages"), list) else 0
    for key in ("input", "prompt", "instructions"):
        total += count_text(_flatten(body.get(key)))
    return total


def _flatten(value: Any) -> str:
    """The text of a string, a list of strings, or a list of items with content (Responses API input)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    texts = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            texts.append(_text_of(item.get("content")) or str(item.get("text") or ""))
    return " ".join(texts)


def last_user_text(messages: Any) -> str:
    """The text of the last user message (or a Responses API `input` string), or an empty string."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""
