"""Webhook events for customers: `events` builds them (pure), `dispatcher` delivers the outbox."""
