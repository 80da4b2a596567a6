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


def last_user_text(messages: Any) -> str:
    """The text of the last user message, or an empty string."""
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""
