"""The naive relay Tollgate's throughput is compared with (`python -m bench.relay`).

What a team writes in an afternoon: Flask, `requests` to the upstream, one SQLite upsert of the
customer's spend per call (a float, no budget, no reservation, no spend log, no webhooks), under
gunicorn's sync workers:

    NAIVE_UPSTREAM=http://127.0.0.1:PORT/v1 NAIVE_DATABASE=/tmp/naive.db \
        gunicorn -w 2 -k sync -b 127.0.0.1:PORT bench.naive_relay:app
"""

from __future__ import annotations

import os
import sqlite3

import requests
from flask import Flask, Response, request

app = Flask(__name__)
session = requests.Session()
_connection: sqlite3.Connection | None = None  # one per worker process: sync workers have one thread

UPSERT = (
    "INSERT INTO spend (customer, spend, calls) VALUES (?, ?, 1) "
    "ON CONFLICT(customer) DO UPDATE SET spend = spend + excluded.spend, calls = calls + 1"
)


def database() -> sqlite3.Connection:
    global _connection
    if _connection is None:
        _connection = sqlite3.connect(os.environ["NAIVE_DATABASE"], timeout=30, isolation_level=None)
        _connection.execute("PRAGMA journal_mode = WAL")
        _connection.execute("PRAGMA synchronous = NORMAL")
        _connection.execute(
            "CREATE TABLE IF NOT EXISTS spend (customer TEXT PRIMARY KEY, spend REAL NOT NULL, calls INTEGER NOT NULL)"
        )
    return _connection


@app.post("/chat/completions")
def chat_completions():
    body = request.get_json()
    upstream = session.post(
        f"{os.environ['NAIVE_UPSTREAM']}/chat/completions",
        json=body,
        headers={"Authorization": "Bearer none"},
        timeout=600,
    )
    usage = upstream.json().get("usage") or {}
    cost = usage.get("prompt_tokens", 0) * 0.15e-6 + usage.get("completion_tokens", 0) * 0.6e-6
    database().execute(UPSERT, (str(body.get("user", "")), cost))
    return Response(upstream.content, status=upstream.status_code, mimetype="application/json")
