"""Operator commands. `python cli.py check-config [PATH]` validates a config without serving."""

from __future__ import annotations

import argparse
import sys

from config import ConfigError, load_config
from spend.pricing import pricer_for


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
        priced = "priced" if pricer_for(deployment).priced else "NOT PRICED (charged nothing)"
        print(f"model {deployment.model_name}: {deployment.provider}/{deployment.model}, {priced}")
    print("config OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python cli.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate config.yaml and exit")
    check.add_argument("path", nargs="?", help="config file (default: $CONFIG_FILE_PATH or ./config.yaml)")
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path)
    return 2


if __name__ == "__main__":
    sys.exit(main())
