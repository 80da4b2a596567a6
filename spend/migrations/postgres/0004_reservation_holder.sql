-- Which worker process holds each reservation (`host:pid`), so that when a worker dies its
-- reservations are given back at once (gunicorn's child_exit, app.release_dead_worker) instead of
-- holding the customer's budget until they expire. Rows from before hold ''.

ALTER TABLE reservations ADD COLUMN holder TEXT NOT NULL DEFAULT '';
CREATE INDEX reservations_by_holder ON reservations (holder);
