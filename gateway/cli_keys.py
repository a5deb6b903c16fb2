"""`gateway keys create | list | revoke | rotate`: virtual keys, straight on the configured store.

The new key is printed once, on stdout, and never again; everything else goes to stderr or as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.identity.keys import ROLES, issue, successor
from gateway.store.base import KeyStore, key_store, open_store


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list, revoke and rotate virtual keys")
    keys.add_argument("-c", "--config", default="gateway.yaml", help="config file (default: gateway.yaml)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", default="")
    create.add_argument("--project", default="default")
    create.add_argument("--team", default="")
    create.add_argument("--user", default="")
    create.add_argument("--role", default="developer", choices=ROLES)
    create.add_argument("--models", default="", help="allowed models, comma-separated (default: all)")
    create.add_argument("--rpm", type=int, default=0)
    create.add_argument("--tpm", type=int, default=0)
    create.add_argument("--budget-usd", default="0", help="AMOUNT or AMOUNT/day or AMOUNT/month")
    create.add_argument("--expires-days", type=float)
    create.add_argument("--meta", action="append", default=[], metavar="K=V", help="metadata (plan=pro, region=eu)")
    listing = actions.add_parser("list", help="list keys as JSON lines (no secrets)")
    listing.add_argument("--project")
    for name, helptext in (("revoke", "revoke a key at once"), ("rotate", "replace a key; print the new one")):
        action = actions.add_parser(name, help=helptext)
        action.add_argument("id")
        if name == "rotate":
            action.add_argument("--grace-s", type=float, default=0.0, help="the old key works this much longer")
    # `--config` is accepted before or after the action (`gateway keys create --config F ...`).
    for action in actions.choices.values():
        action.add_argument("-c", "--config", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(config: GatewayConfig, args: argparse.Namespace) -> int:
    store = open_store(config.telemetry.store, query_timeout_s=config.telemetry.query_timeout_s)
    keys = key_store(store)
    if store is None or keys is None:
        print("virtual keys need a store: set telemetry.store", file=sys.stderr)
        return 2

    async def go() -> int:
        await store.open()
        try:
            return await _act(keys, args)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


async def _act(keys: KeyStore, args: argparse.Namespace) -> int:
    if args.action == "create":
        fields: dict[str, Any] = {
            "name": args.name,
            "project": args.project,
            "team": args.team,
            "user": args.user,
            "role": args.role,
            "models": args.models or None,
            "rpm": args.rpm,
            "tpm": args.tpm,
            "budget_usd": args.budget_usd,
            "metadata": dict(m.partition("=")[::2] for m in args.meta),
        }
        if args.expires_days is not None:
            fields["expires_days"] = args.expires_days
        key, row = issue(fields)
        await keys.create_key(row)
        _show(row.public())
        print(key)
        return 0
    if args.action == "list":
        for row in await keys.list_keys(project=args.project):
            _show(row.public(), stream=sys.stdout)
        return 0
    if args.action == "revoke":
        revoked = await keys.revoke_key(args.id, at=time.time())
        if revoked is None:
            print(f"no key {args.id!r}", file=sys.stderr)
            return 1
        _show(revoked.public(), stream=sys.stdout)
        return 0
    old = await keys.get_key(args.id)
    if old is None:
        print(f"no key {args.id!r}", file=sys.stderr)
        return 1
    key, new = successor(old)
    await keys.rotate_key(old.id, new, revoke_at=time.time() + args.grace_s)
    _show(new.public())
    print(key)
    return 0


def _show(data: dict[str, Any], stream: Any = None) -> None:
    print(orjson.dumps(data).decode(), file=stream or sys.stderr)
