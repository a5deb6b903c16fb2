"""The command line: `gateway serve`, `gateway check`, `gateway keys ...` (cli_keys.py), `gateway policy ...`
(cli_policy.py), `gateway migrate ...` and `gateway store check` (cli_store.py)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from gateway import __version__, cli_keys, cli_policy, cli_store
from gateway.config import ConfigError, GatewayConfig
from gateway.load import load_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="A drop-in, OpenAI-compatible LLM gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("-c", "--config", default="gateway.yaml", help="config file (default: gateway.yaml)")
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port (default: server.port)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = commands.add_parser("check", help="validate a config file and print every problem")
    check.add_argument("-c", "--config", default="gateway.yaml", help="config file (default: gateway.yaml)")
    cli_keys.add_parser(commands)
    cli_policy.add_parser(commands)
    cli_store.add_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "policy":  # policy files stand alone: no gateway.yaml needed
        return cli_policy.run(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.lines():
            print(line, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {args.config}", file=sys.stderr)
        return 2
    if args.command == "keys":
        return cli_keys.run(config, args)
    if args.command in ("migrate", "store"):
        return cli_store.run(config, args)
    if args.command == "check":
        _check_runtime(config, args.config)
        print(f"{args.config}: ok ({len(config.models)} models, {len(config.providers)} providers)")
        return 0
    return serve_command(config, args)


def _check_runtime(config: GatewayConfig, source: str) -> None:
    # Limits that can never apply: an error when the config proves it, a warning when it may not (rules.py).
    from gateway.filters.ratelimit_rules import rule_problems

    errors, warnings = rule_problems(config)
    for key_path, problem in warnings:
        print(f"warning: {source}: {key_path}: {problem}", file=sys.stderr)
    if errors:
        for line in ConfigError(source, errors).lines():
            print(line, file=sys.stderr)
        raise SystemExit(2)
    # Loading the pricing file is part of a check: its errors name its own file and key path.
    from gateway.telemetry.pricing import PriceTable

    path = config.resolve_path(config.telemetry.pricing_file)
    if path.is_file():
        try:
            PriceTable.load(path)
        except ConfigError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            raise SystemExit(2) from None
    # So are the policy files: a gateway does not start on a policy set it cannot load.
    from gateway.policy import PolicyError, load_policies

    if config.policies.paths:
        try:
            load_policies([config.resolve_path(p) for p in config.policies.paths])
        except PolicyError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            raise SystemExit(2) from None


def serve_command(config: GatewayConfig, args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.server import uvicorn_options
    from gateway.server.watch import CUT_MARGIN_S

    _check_runtime(config, args.config)
    # numpy is imported later (prompt similarity). Its BLAS would start a thread per core for the background
    # matrix products, spinning on the cores that serve requests: one thread does that work at half the CPU.
    # An operator's own setting wins.
    for blas_threads in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(blas_threads, "1")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.host or config.server.host
    port = args.port or config.server.port
    workers = args.workers or config.server.workers
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        **uvicorn_options(config.server),  # httptools, with the edges of a connection bounded
        "lifespan": "on",
        "log_level": "warning",
        "access_log": False,  # the gateway writes its own JSON access log, batched off the request path
        "server_header": False,
        # X-Forwarded-For is trusted only from configured proxies, by the gateway itself, not by uvicorn.
        "proxy_headers": False,
        # The gateway ends what still runs at drain_timeout_s itself (gateway/api/watch.py CUT_MARGIN_S); uvicorn's
        # deadline is the backstop.
        "timeout_graceful_shutdown": config.server.drain_timeout_s + CUT_MARGIN_S,
    }
    # uvicorn re-raises the stop signal once it has shut down gracefully; with these handlers in place that
    # re-raise returns here instead of killing the process, so a drained gateway exits 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda signum, frame: None)
    logging.getLogger("gateway").info(
        "gateway %s listening on http://%s:%d (%d worker(s))", __version__, host, port, workers
    )
    if workers == 1:
        from gateway.app import build_app

        uvicorn.run(build_app(config), **options)
        return 0
    # Several workers: each imports the app from the config file, and /metrics aggregates them all.
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
    try:
        uvicorn.run("gateway.app:app_from_env", factory=True, workers=workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
