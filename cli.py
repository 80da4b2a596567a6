"""Operator commands, run from the repository root with the server's environment:

python cli.py check-config [PATH]             validate a config without serving
python cli.py migrate                         apply pending schema migrations (the Procfile's release: line)
python cli.py copy-sqlite PATH                copy a SQLite database into the PostgreSQL of DATABASE_URL
python cli.py backup PATH                     copy the live SQLite database of DATABASE_URL to PATH, safely
python cli.py webhooks list [--status dead]   the webhook outbox, newest first
python cli.py webhooks requeue --dead         deliver every dead event again
python cli.py webhooks requeue EVENT_ID ...   deliver these events again
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time

from config import ConfigError, load_config
from providers import PRICING_IDS
from spend.backup import BackupRefused, backup_sqlite
from spend.engines import is_postgres, open_store
from spend.outbox import RETRY_WINDOW_SECONDS
from spend.pricing import pricer_for
from spend.store import StoreUnavailable
from spend.transfer import NotEmpty, copy_sqlite_to_postgres
from webhooks.events import iso


def check_config(path: str | None) -> int:
    """Print every problem and warning of the config; exit status 1 when it cannot be used."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}")
    for deployment in config.deployments:
        print(f"model {deployment.model_name}: {_describe(deployment)}")
    print("config OK")
    return 0


def _describe(deployment) -> str:
    """Where a deployment sends its calls and how they are priced, for check-config."""
    target = f"{deployment.provider}/{deployment.model}" if deployment.provider else deployment.model
    if deployment.wildcard and "*" in target:
        pricing = "custom prices" if deployment.prices else "priced per requested model by the pricing library"
        provider = f"provider {deployment.provider}" if deployment.provider else "the provider LiteLLM infers per call"
        return f"wildcard: any model matching '{deployment.model_name}' goes to {target} ({provider}), {pricing}"
    priced = "priced" if pricer_for(deployment, PRICING_IDS).priced else "NOT PRICED (charged nothing)"
    return f"{target}, {priced}"


def migrate(config_path: str | None) -> int:
    """Bring the database of DATABASE_URL to the current schema, printing each step."""
    try:
        config = load_config(config_path)
        store = open_store(config.database_url)
        try:
            applied = store.engine.migrate(report=print)
            print(f"{store.engine.describe()}: schema current ({len(applied)} migration(s) applied now)")
        finally:
            store.engine.close()
    except (ConfigError, StoreUnavailable) as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    return 0


def copy_sqlite(source: str, config_path: str | None) -> int:
    """Copy the SQLite database at `source` into the (new, empty) PostgreSQL database of DATABASE_URL."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not is_postgres(config.database_url):
        print("tollgate: set DATABASE_URL to the PostgreSQL database to copy into", file=sys.stderr)
        return 2
    try:
        counts = copy_sqlite_to_postgres(source, config.database_url, report=print)
    except (StoreUnavailable, NotEmpty) as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    print(f"copied {sum(counts.values()):,} rows from {source}")
    return 0


def backup(target: str, config_path: str | None) -> int:
    """Copy the SQLite database of DATABASE_URL to `target` while the server runs and writes."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if is_postgres(config.database_url):
        print(
            "tollgate: DATABASE_URL is PostgreSQL: back it up with pg_dump (or the provider's snapshots); "
            "see docs/operations.md",
            file=sys.stderr,
        )
        return 2
    try:
        result = backup_sqlite(config.database_url, target, report=print)
    except (BackupRefused, sqlite3.Error, OSError) as exc:
        print(f"tollgate: backup refused: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{count:,} {table}" for table, count in result.rows.items())
    print(f"backup {result.path}: {result.size_bytes:,} bytes, integrity ok ({counts})")
    return 0


def webhooks(args) -> int:
    """List or re-queue outbox events, straight from the database the server uses."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.action == "requeue" and not args.dead and not args.event_ids:
        print("name event ids, or --dead for every dead event", file=sys.stderr)
        return 2
    store = open_store(config.database_url)
    try:
        store.engine.migrate()
        if args.action == "list":
            for event in store.outbox.list(args.status, args.limit):
                print(
                    f"{event.event_id}  {event.status:9}  {event.event:24}  attempts={event.attempts}  "
                    f"customer={event.customer_id}  created={iso(event.created_at)}  error={event.last_error}"
                )
            return 0
        count = store.outbox.requeue(None if args.dead else args.event_ids, time.time(), RETRY_WINDOW_SECONDS)
        print(f"requeued {count} event(s); running workers deliver them within seconds")
        return 0
    except StoreUnavailable as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    finally:
        store.engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python cli.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate config.yaml and exit")
    check.add_argument("path", nargs="?", help="config file (default: $CONFIG_FILE_PATH or ./config.yaml)")
    migrating = commands.add_parser("migrate", help="apply pending schema migrations")
    migrating.add_argument("--config", help="config file (default: $CONFIG_FILE_PATH or ./config.yaml)")
    copying = commands.add_parser("copy-sqlite", help="copy a SQLite database into DATABASE_URL's PostgreSQL")
    copying.add_argument("source", help="the SQLite file, e.g. tollgate.db")
    copying.add_argument("--config", help="config file (default: $CONFIG_FILE_PATH or ./config.yaml)")
    backing_up = commands.add_parser("backup", help="copy the live SQLite database to a new file")
    backing_up.add_argument("path", help="the new file, e.g. backups/tollgate-2026-01-31.db (must not exist)")
    backing_up.add_argument("--config", help="config file (default: $CONFIG_FILE_PATH or ./config.yaml)")
    hooks = commands.add_parser("webhooks", help="list or re-queue webhook events")
    hooks.add_argument("action", choices=["list", "requeue"])
    hooks.add_argument("event_ids", nargs="*", help="events to re-queue")
    hooks.add_argument("--status", choices=["pending", "delivered", "dead"], help="list only these")
    hooks.add_argument("--limit", type=int, default=100)
    hooks.add_argument("--dead", action="store_true", help="re-queue every dead event")
    hooks.add_argument("--config", help="config file (default: $CONFIG_FILE_PATH or ./config.yaml)")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "migrate":
        return migrate(args.config)
    if args.command == "copy-sqlite":
        return copy_sqlite(args.source, args.config)
    if args.command == "backup":
        return backup(args.path, args.config)
    return webhooks(args)


if __name__ == "__main__":
    sys.exit(main())
