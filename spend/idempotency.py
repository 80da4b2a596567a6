"""Idempotency keys (`Idempotency-Key`), for the ledger role, on every engine's `Database`.

A call with a key takes it first (`take`): the first call with it goes ahead; a later one gets
the first's answer to replay, or learns it is still in flight. The key is finished inside the
call's settlement transaction (`finish`): a served call keeps it, with its answer and cost, for
IDEMPOTENCY_SECONDS; a failed or unreplayable one frees it. A call refused before it was sent
frees its key at once (`free`).
"""

from __future__ import annotations

from spend.store import CallRecord, Cursor, Database, IdempotencyClaim, Replay, Settlement

IDEMPOTENCY_SECONDS = 24 * 3600.0


def take(db: Database, claim: IdempotencyClaim, request_id: str, now: float, hold: float) -> Replay | None:
    """Take the key for `request_id` for `hold` seconds (None), or what the call that holds it
    left to replay. An expired key is taken over."""

    def run(tx: Cursor) -> Replay | None:
        tx.execute(
            "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ? AND expires_at <= ?",
            (claim.customer, claim.key, now),
        )
        inserted = tx.execute(
            "INSERT INTO idempotency_keys (customer_id, idempotency_key, request_id, state, expires_at, "
            "created_at) VALUES (?, ?, ?, 'in_flight', ?, ?) ON CONFLICT DO NOTHING",
            (claim.customer, claim.key, request_id, now + hold, now),
        )
        if inserted.rowcount == 1:
            return None
        row = tx.execute(
            "SELECT request_id, response, content_type, cost_units, state FROM idempotency_keys "
            "WHERE customer_id = ? AND idempotency_key = ?",
            (claim.customer, claim.key),
        ).fetchone()
        cost = None if row[3] is None else int(row[3])
        response = None if row[1] is None else bytes(row[1])
        return Replay(row[0], response, row[2], cost, in_flight=row[4] == "in_flight")

    return db.write(run)


def free(db: Database, claim: IdempotencyClaim, request_id: str) -> None:
    """Free the key `request_id` holds."""
    db.write(
        lambda tx: tx.execute(
            "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ? AND request_id = ?",
            (claim.customer, claim.key, request_id),
        )
    )


def finish(tx: Cursor, db: Database, settlement: Settlement, record: CallRecord) -> None:
    """In the settlement's transaction: a served call keeps its key (and answer) for 24 h; a failed
    or unreplayable one frees it."""
    claim = settlement.idempotency
    if record.status != "success" or settlement.response is None:
        tx.execute(
            "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ? AND request_id = ?",
            (claim.customer, claim.key, record.request_id),
        )
        return
    tx.execute(
        "UPDATE idempotency_keys SET state = 'done', response = ?, content_type = ?, cost_units = ?, "
        "expires_at = ? WHERE customer_id = ? AND idempotency_key = ? AND request_id = ?",
        (
            settlement.response,
            settlement.content_type,
            db.units(record.cost_units),
            record.ended_at + IDEMPOTENCY_SECONDS,
            claim.customer,
            claim.key,
            record.request_id,
        ),
    )
