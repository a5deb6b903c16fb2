"""`gateway migrate status | up | down` and `gateway store check`: the configured store's schema, on demand.

Exit codes (the README's "Command line" lists them too):

    0  done; for `store check`: reachable, and the schema is the one this gateway knows
    1  a migration step failed (it was rolled back; the steps before it stay applied)
    2  a problem in the config or the command (no store, no --yes for down, a target that cannot be reached)
    3  the store cannot be reached, or did not answer within the timeout
    4  store check: the schema is behind (migrations pending, which the gateway applies when it starts)
    5  the schema has migrations this gateway does not know (a newer gateway applied them)
    6  another migrator held the schema's lock for longer than --lock-timeout (on SQLite: the file's write lock,
       which a gateway writing holds too)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Any

from gateway.config import GatewayConfig
from gateway.store.base import StoreUnavailable
from gateway.store.migrate import (
    Migration,
    MigrationRefused,
    MigratorBusy,
    SchemaAhead,
    SchemaStatus,
    drops,
    plan,
)
from gateway.store.schema import Schema, schema_of

OK, FAILED, USAGE, UNAVAILABLE, BEHIND, AHEAD, BUSY = 0, 1, 2, 3, 4, 5, 6


def seconds(text: str) -> float:
    """A time limit: a positive, finite number of seconds (0, a negative or nan had been taken, and told as "no
    answer within 0 s" or "the lock held for more than nan s", of a store that was fine)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def add_parser(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="show, apply or revert the store's schema migrations")
    migrate.add_argument("-c", "--config", default="gateway.yaml", help="config file (default: gateway.yaml)")
    actions = migrate.add_subparsers(dest="action", required=True)
    actions.add_parser("status", help="the migrations applied and pending, by version")
    up = actions.add_parser("up", help="apply the pending migrations (up to --to)")
    up.add_argument("--to", type=int, help="the version to stop at (default: the latest)")
    down = actions.add_parser("down", help="revert the migrations above --to, newest first (destroys their data)")
    down.add_argument("--to", type=int, required=True, help="the version to go back to (0: an empty schema)")
    down.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    down.add_argument(
        "--force", action="store_true", help="go on while gateways are connected to the database (PostgreSQL)"
    )
    for name in ("up", "down"):
        actions.choices[name].add_argument(
            "--lock-timeout", type=seconds, default=60.0, help="seconds to wait for another migrator (default: 60)"
        )
    store = commands.add_parser("store", help="check the configured store")
    store.add_argument("-c", "--config", default="gateway.yaml", help="config file (default: gateway.yaml)")
    store_actions = store.add_subparsers(dest="action", required=True)
    check = store_actions.add_parser("check", help="connectivity and schema version; the exit code says which")
    check.add_argument("--timeout", type=seconds, default=5.0, help="seconds to wait for the store (default: 5)")
    # `--config` is accepted before or after the action (`gateway migrate up --config F`), as `keys` takes it.
    for action in (*actions.choices.values(), check):
        action.add_argument("-c", "--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(config: GatewayConfig, args: argparse.Namespace) -> int:
    timeout = args.timeout if args.command == "store" else 10.0
    try:
        schema = schema_of(config.telemetry.store, timeout_s=timeout, lock_wait_s=getattr(args, "lock_timeout", 60.0))
    except ValueError:  # what the config's check lets by; not the message, which may hold the URL and its password
        print("error: telemetry.store: not a store URL this gateway can open (see `gateway check`)", file=sys.stderr)
        return USAGE
    if schema is None:
        print("telemetry.store is none: no schema to check or migrate", file=sys.stderr)
        return OK if args.command == "store" else USAGE
    return asyncio.run(_run(schema, args))


async def _run(schema: Schema, args: argparse.Namespace) -> int:
    try:
        if args.command == "store":
            return await _check(schema, args.timeout)
        status = await schema.status()
        if args.action == "status":
            _print_status(schema, status)
            return AHEAD if status.unknown else OK
        return await _migrate(schema, status, args)
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except MigrationRefused as exc:
        print(f"error: {schema.where}: {exc}", file=sys.stderr)
        return AHEAD if isinstance(exc, SchemaAhead) else USAGE
    except MigratorBusy as exc:
        print(f"error: {schema.where}: {exc}", file=sys.stderr)
        return BUSY
    finally:
        await schema.close()


async def _check(schema: Schema, timeout_s: float) -> int:
    started = time.monotonic()
    try:
        # Each call is bounded by the timeout already; this is the command's own promise, whatever a driver does.
        async with asyncio.timeout(2 * timeout_s + 1):
            status = await schema.status()
    except TimeoutError:
        raise StoreUnavailable(f"{schema.where}: no answer within {timeout_s:g} s") from None
    print(f"store: {schema.where}: answered in {(time.monotonic() - started) * 1000:.0f} ms")
    line = f"schema: version {status.version}, this gateway's latest {status.latest}: {status.state}"
    if status.unknown:
        unknown = ", ".join(f"{a.version:04d} {a.name}" for a in status.unknown)
        print(f"{line}; applied by a newer gateway: {unknown}")
        return AHEAD
    if status.pending:
        print(f"{line}; pending: {', '.join(f'{m.version:04d} {m.name}' for m in status.pending)}")
        print("the gateway applies them when it starts, or run `gateway migrate up`")
        return BEHIND
    print(line)
    return OK


def _print_status(schema: Schema, status: SchemaStatus) -> None:
    print(f"store: {schema.where}")
    print(f"schema: version {status.version}, this gateway's latest {status.latest}: {status.state}")
    applied = {a.version: a for a in status.applied}
    rows = sorted({*applied, *(m.version for m in status.known)})
    names = {m.version: m.name for m in status.known} | {a.version: a.name for a in status.applied}
    width = max((len(n) for n in names.values()), default=0)
    for version in rows:
        if version in applied:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(applied[version].applied_at))
            note = f"applied {when}" + ("" if version in {m.version for m in status.known} else ", unknown here")
        else:
            note = "pending"
        print(f"  {version:04d} {names[version]:<{width}}  {note}")


async def _migrate(schema: Schema, status: SchemaStatus, args: argparse.Namespace) -> int:
    steps = plan(status, args.action, args.to)  # refused here, before anything runs, when it cannot be done
    if not steps:
        print(f"{schema.where}: nothing to do (version {status.version})")
        return AHEAD if status.unknown else OK
    if args.action == "down" and not args.force and (live := await schema.gateways_connected()):
        # What down drops, serving gateways write to: their records fail and spool meanwhile, or land in tables
        # that an `up` made again. The README's rolling back stops them first.
        print(
            f"error: {schema.where}: {live} gateway connection(s) open on this database: stop the gateways before"
            " going down (or --force if they are another schema's)",
            file=sys.stderr,
        )
        return USAGE
    if args.action == "down" and not args.yes and not _confirmed(schema, steps):
        return USAGE

    def done(step: Migration) -> None:
        print(f"  {args.action} {step.version:04d} {step.name}", flush=True)

    print(f"{schema.where}: {args.action} from version {status.version}", flush=True)
    try:
        ran = await schema.migrate(args.action, args.to, on_step=done)
    except (MigrationRefused, MigratorBusy, StoreUnavailable):
        raise
    except Exception as exc:  # noqa: BLE001 - the driver's error on a failing step, whatever its type, is reported
        print(f"error: {schema.where}: {args.action} failed, that step rolled back: {exc}", file=sys.stderr)
        return FAILED
    after = await schema.status()
    print(f"{schema.where}: {len(ran)} step(s), now at version {after.version}")
    return OK


def _confirmed(schema: Schema, steps: list[Migration]) -> bool:
    print(f"{schema.where}: down reverts {len(steps)} migration(s), newest first:", file=sys.stderr)
    for step in steps:
        lost = "; ".join(drops(step)) or "no table or column dropped"
        print(f"  {step.version:04d} {step.name}: {lost}", file=sys.stderr)
    if not sys.stdin.isatty():
        print("refusing without --yes: the data of what is dropped is lost", file=sys.stderr)
        return False
    try:
        answer = input("type yes to go on: ")
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: a no, not a traceback
        print(file=sys.stderr)
        return False
    return answer.strip().lower() == "yes"
