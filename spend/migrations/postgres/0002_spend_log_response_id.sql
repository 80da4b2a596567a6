-- The upstream's id of each answer (`chatcmpl-…`, `resp_…`, `msg_…`) beside Tollgate's call id, so
-- `/spend/logs?request_id=` finds a call by either. Rows written before have none.
ALTER TABLE spend_logs ADD COLUMN response_id TEXT;

CREATE INDEX spend_logs_by_response ON spend_logs (response_id) WHERE response_id IS NOT NULL
