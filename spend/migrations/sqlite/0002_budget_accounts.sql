-- Budget enforcement: spend kept per account (the customer's main account has scope '', a
-- per-model budget has the model as scope), reservations of calls in flight, and the request
-- log of rate limits. Private budget rows name the customer that owns them.

CREATE TABLE spend_accounts (
    user_id TEXT NOT NULL REFERENCES customers (user_id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    spend_units INTEGER NOT NULL DEFAULT 0,
    reserved_units INTEGER NOT NULL DEFAULT 0,
    period_end REAL,
    PRIMARY KEY (user_id, scope)
) WITHOUT ROWID;

INSERT INTO spend_accounts (user_id, scope, spend_units) SELECT user_id, '', spend_units FROM customers;

ALTER TABLE customers DROP COLUMN spend_units;

CREATE TABLE reservations (
    request_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    units INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (request_id, scope)
) WITHOUT ROWID;

CREATE INDEX reservations_by_customer ON reservations (user_id, expires_at);

CREATE TABLE rate_events (
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    at REAL NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX rate_events_by_customer ON rate_events (user_id, at);

ALTER TABLE budgets ADD COLUMN owner_user_id TEXT
