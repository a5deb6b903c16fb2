"""`gateway migrate` and `gateway store check` as an operator runs them: what they print and the exit code each
outcome has (cli_store.py's docstring), on SQLite and on PostgreSQL, reachable, refused, and hung."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from gateway import cli_store
from gateway.cli import main
from gateway.store.migrate import migrations
from gateway.store.postgres import PostgresStore
from tests.faults import FaultyProxy
from tests.services import drop_schema, free_port, postgres_fetch, require_postgres

LATEST = migrations()[-1].version


def config_file(tmp_path: Path, store: str) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "providers: {mock: {type: mock}}\n"
        "models: {m: {deployments: [{provider: mock, model: m}]}}\n"
        f"telemetry: {{store: '{store}'}}\n"
    )
    return str(path)


@pytest.fixture
def sqlite_config(tmp_path: Path) -> str:
    return config_file(tmp_path, f"sqlite:///{tmp_path / 'g.db'}")


SCHEMA = f"gw_test_{uuid.uuid4().hex[:12]}"  # each test drops it after itself


@pytest.fixture
def postgres_config(tmp_path: Path) -> Iterator[str]:
    dsn = require_postgres()
    try:
        yield config_file(tmp_path, f"{dsn}?schema={SCHEMA}")
    finally:
        drop_schema(dsn, SCHEMA)


def versions(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        conn.close()


def test_status_up_and_check_on_sqlite(sqlite_config: str, tmp_path: Path, capsys) -> None:
    db = tmp_path / "g.db"
    assert main(["store", "check", "-c", sqlite_config]) == cli_store.BEHIND
    assert not db.exists()  # a check or a status never makes the file
    assert main(["migrate", "status", "-c", sqlite_config]) == cli_store.OK
    out = capsys.readouterr().out
    assert f"schema: version 0, this gateway's latest {LATEST}: behind" in out
    assert "  0001 request_logs" in out
    assert "pending" in out

    assert main(["migrate", "up", "--to", "3", "-c", sqlite_config]) == cli_store.OK
    assert versions(db) == [1, 2, 3]
    assert "up 0003 virtual_keys" in capsys.readouterr().out
    assert main(["migrate", "up", "--to", str(LATEST + 1), "-c", sqlite_config]) == cli_store.USAGE
    assert f"no migration {LATEST + 1}" in capsys.readouterr().err
    assert main(["migrate", "up", "-c", sqlite_config]) == cli_store.OK
    assert versions(db) == [m.version for m in migrations()]
    assert main(["store", "check", "-c", sqlite_config]) == cli_store.OK
    assert f"schema: version {LATEST}, this gateway's latest {LATEST}: current" in capsys.readouterr().out
    assert main(["migrate", "up", "-c", sqlite_config]) == cli_store.OK
    assert "nothing to do" in capsys.readouterr().out


def test_down_needs_a_target_and_a_confirmation(sqlite_config: str, tmp_path: Path, capsys, monkeypatch) -> None:
    db = tmp_path / "g.db"
    assert main(["migrate", "up", "-c", sqlite_config]) == cli_store.OK
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "down", "-c", sqlite_config])  # no --to: argparse refuses
    assert exited.value.code == 2
    capsys.readouterr()

    # Not a terminal, no --yes: what would be dropped is said, and nothing is.
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["migrate", "down", "--to", "11", "-c", sqlite_config]) == cli_store.USAGE
    err = capsys.readouterr().err
    assert "0013 response_cache: ALTER TABLE model_cost_logs DROP COLUMN saved_usd" in err
    assert "0012 usage_rollups: DROP TABLE usage_rollups" in err
    assert "refusing without --yes" in err
    assert versions(db)[-1] == LATEST

    # A terminal: asked, and only "yes" goes on.
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    assert main(["migrate", "down", "--to", "11", "-c", sqlite_config]) == cli_store.USAGE
    assert versions(db)[-1] == LATEST
    for gone in (EOFError, KeyboardInterrupt):  # Ctrl-D, Ctrl-C at the prompt: a no, not a traceback

        def leave(prompt: str, gone: type[BaseException] = gone) -> str:
            raise gone

        monkeypatch.setattr("builtins.input", leave)
        assert main(["migrate", "down", "--to", "11", "-c", sqlite_config]) == cli_store.USAGE
        assert versions(db)[-1] == LATEST
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert main(["migrate", "down", "--to", "11", "-c", sqlite_config]) == cli_store.OK
    assert versions(db)[-1] == 11
    assert main(["migrate", "down", "--to", "0", "--yes", "-c", sqlite_config]) == cli_store.OK
    assert versions(db) == []
    assert main(["store", "check", "-c", sqlite_config]) == cli_store.BEHIND


def test_a_schema_newer_than_the_gateway(sqlite_config: str, tmp_path: Path, capsys) -> None:
    assert main(["migrate", "up", "-c", sqlite_config]) == cli_store.OK
    conn = sqlite3.connect(tmp_path / "g.db")
    conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)")
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert main(["store", "check", "-c", sqlite_config]) == cli_store.AHEAD
    assert "applied by a newer gateway: 9999 from_the_future" in capsys.readouterr().out
    assert main(["migrate", "status", "-c", sqlite_config]) == cli_store.AHEAD
    assert "9999 from_the_future" in capsys.readouterr().out
    assert main(["migrate", "down", "--to", "0", "--yes", "-c", sqlite_config]) == cli_store.AHEAD
    assert "does not know" in capsys.readouterr().err
    assert versions(tmp_path / "g.db")[-1] == 9999


def test_postgres_status_up_down_and_check(postgres_config: str, capsys) -> None:
    assert main(["store", "check", "-c", postgres_config]) == cli_store.BEHIND
    assert main(["migrate", "up", "-c", postgres_config]) == cli_store.OK
    assert main(["store", "check", "-c", postgres_config]) == cli_store.OK
    out = capsys.readouterr().out
    assert "answered in" in out
    assert "postgres 127.0.0.1" in out or "postgres localhost" in out
    # --force: a gateway of another test may be connected to this database (see the test of the refusal below).
    assert main(["migrate", "down", "--to", "10", "--yes", "--force", "-c", postgres_config]) == cli_store.OK
    assert main(["migrate", "status", "-c", postgres_config]) == cli_store.OK
    out = capsys.readouterr().out
    assert "schema: version 10" in out
    assert "0011 drop_ts_index" in out


def test_a_second_migrator_on_postgres_gives_up_with_its_own_exit_code(postgres_config: str, capsys) -> None:
    dsn = require_postgres()

    async def scenario() -> int:
        conn = await asyncpg.connect(dsn)  # another migrator, mid-run
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtext('gateway.schema:' || $1::text))", SCHEMA)
            command = ["migrate", "up", "--lock-timeout", "0.2", "-c", postgres_config]
            return await asyncio.get_running_loop().run_in_executor(None, main, command)
        finally:
            await conn.close()

    assert asyncio.run(scenario()) == cli_store.BUSY
    assert "another migrator" in capsys.readouterr().err
    assert main(["migrate", "up", "-c", postgres_config]) == cli_store.OK  # the lock went with its session
    rows = postgres_fetch(dsn, f"SELECT count(*) FROM {SCHEMA}.schema_migrations")
    assert rows[0][0] == LATEST


def test_a_store_that_refuses_connections_is_unreachable(tmp_path: Path, capsys) -> None:
    config = config_file(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert main(["store", "check", "-c", config, "--timeout", "2"]) == cli_store.UNAVAILABLE
    assert "cannot connect" in capsys.readouterr().err
    assert main(["migrate", "status", "-c", config]) == cli_store.UNAVAILABLE


def test_a_hung_postgres_fails_the_check_within_its_timeout(tmp_path: Path, capsys) -> None:
    """A server that accepts and never says a word (the kernel completes the handshake of a listening socket
    nobody reads): the check gives up after its timeout, it does not hang."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        config = config_file(tmp_path, f"postgresql://postgres:s3cret@127.0.0.1:{port}/db")
        started = time.monotonic()
        assert main(["store", "check", "-c", config, "--timeout", "0.5"]) == cli_store.UNAVAILABLE
        # Bounded by the timeout, far from "forever"; the margin is generous for a busy machine.
        assert time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "no answer within 0.5 s" in err
    assert "s3cret" not in err


def test_no_store_configured(tmp_path: Path, capsys) -> None:
    config = config_file(tmp_path, "none")
    assert main(["store", "check", "-c", config]) == cli_store.OK
    assert main(["migrate", "up", "-c", config]) == cli_store.USAGE
    assert "telemetry.store is none" in capsys.readouterr().err


PASSWORD = "pw-never-shown"


@pytest.mark.parametrize(
    "store",
    [
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/db",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:99999/db",
        f"postgresql://postgres:{PASSWORD}@[::1/db",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/db?schema=Bad-Name",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/db?schema=x;drop%20table%20y",
        f"postgresq://postgres:{PASSWORD}@127.0.0.1:5432/db",
        f"mysql://root:{PASSWORD}@db/x",
    ],
)
@pytest.mark.parametrize(
    "command", [["check"], ["store", "check"], ["migrate", "status"], ["migrate", "up"], ["migrate", "down", "--to=0"]]
)
def test_a_store_url_that_cannot_be_opened_is_a_config_problem(
    tmp_path: Path, capsys, store: str, command: list[str]
) -> None:
    """Found before connecting, by `gateway check` as by these commands: a one-line problem naming
    telemetry.store (exit 2), never a traceback, never the password."""
    config = config_file(tmp_path, store)
    assert main([*command, "-c", config]) == cli_store.USAGE
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "telemetry.store:" in output
    assert "Traceback" not in output
    assert PASSWORD not in output


def test_a_sqlite_file_that_cannot_be_made_is_unreachable(tmp_path: Path, capsys) -> None:
    # The check used to say "behind, the gateway applies them when it starts": it could not have.
    config = config_file(tmp_path, f"sqlite:///{tmp_path / 'no' / 'such' / 'g.db'}")
    assert main(["store", "check", "-c", config]) == cli_store.UNAVAILABLE
    assert "no folder" in capsys.readouterr().err
    assert main(["migrate", "status", "-c", config]) == cli_store.UNAVAILABLE


def test_a_sqlite_file_locked_by_a_writer_is_waited_for_within_the_commands_limits(
    sqlite_config: str, tmp_path: Path, capsys
) -> None:
    """A gateway (or another migrator) in a write transaction: `migrate up` waits --lock-timeout, then says who
    may hold it (exit 6, as on PostgreSQL); `store check` reads on, within --timeout."""
    assert main(["migrate", "up", "--to", "3", "-c", sqlite_config]) == cli_store.OK
    writer = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert main(["migrate", "up", "--lock-timeout", "0.3", "-c", sqlite_config]) == cli_store.BUSY
        assert time.monotonic() - started < 30  # bounded; generous for a busy machine
        assert "locked (by a gateway writing or another migrator) for more than 0.3 s" in capsys.readouterr().err
        assert main(["store", "check", "--timeout", "0.3", "-c", sqlite_config]) == cli_store.BEHIND
    finally:
        writer.close()
    assert versions(tmp_path / "g.db") == [1, 2, 3]
    assert main(["migrate", "up", "-c", sqlite_config]) == cli_store.OK


def test_a_postgres_that_stops_answering_between_two_steps_fails_the_run(tmp_path: Path, capsys, monkeypatch) -> None:
    """Frozen after the first step (the fault proxy passes nothing more): the run gives up within its timeout,
    exit 3 with a one-line message, where it had hung for good; the step before is committed."""
    dsn = require_postgres()
    with FaultyProxy.before(dsn) as proxy:
        config = config_file(tmp_path, f"{proxy.url(dsn)}?schema={SCHEMA}")

        async def scenario() -> int:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, main, ["migrate", "up", "-c", config])

        original = cli_store._migrate

        async def freezing(schema, status, args):  # type: ignore[no-untyped-def]
            real = schema.migrate

            async def migrate(direction, to, *, on_step=None):  # type: ignore[no-untyped-def]
                def step(done: object) -> None:
                    if on_step is not None:
                        on_step(done)
                    proxy.freeze()

                return await real(direction, to, on_step=step)

            schema.migrate = migrate
            return await original(schema, status, args)

        monkeypatch.setattr(cli_store, "_migrate", freezing)
        started = time.monotonic()
        assert asyncio.run(scenario()) == cli_store.UNAVAILABLE
        assert time.monotonic() - started < 60  # 10 s bound, and the lock's release (5 s); far from forever
    err = capsys.readouterr().err
    assert "no answer within 10 s" in err
    assert "Traceback" not in err
    try:
        rows = postgres_fetch(dsn, f"SELECT version FROM {SCHEMA}.schema_migrations")
        assert [r[0] for r in rows] == [1]
    finally:
        drop_schema(dsn, SCHEMA)


def test_down_refuses_while_gateways_are_connected(postgres_config: str, capsys) -> None:
    """Down on a live store: the serving gateways write to what it drops (records failing and spooling, or landing
    in tables an `up` made again). It names them and stops, --yes or not, unless --force."""
    dsn = require_postgres()
    assert main(["migrate", "up", "-c", postgres_config]) == cli_store.OK

    async def scenario() -> tuple[int, int]:
        store = PostgresStore(dsn, schema=SCHEMA)  # a serving gateway's connections
        await store.open()
        try:
            loop = asyncio.get_running_loop()
            refused = await loop.run_in_executor(
                None, main, ["migrate", "down", "--to=11", "--yes", "-c", postgres_config]
            )
            forced = await loop.run_in_executor(
                None, main, ["migrate", "down", "--to=11", "--yes", "--force", "-c", postgres_config]
            )
            return refused, forced
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (cli_store.USAGE, cli_store.OK)
    err = capsys.readouterr().err
    assert "gateway connection(s) open on this database: stop the gateways" in err
    rows = postgres_fetch(dsn, f"SELECT max(version) FROM {SCHEMA}.schema_migrations")
    assert rows[0][0] == 11  # down by the forced run only


def test_a_migrator_stopped_then_killed_holds_the_lock_then_lets_it_go(postgres_config: str, capsys) -> None:
    """Another migrator's process, frozen (SIGSTOP) while it holds the schema's lock: this one gives up past
    --lock-timeout with exit 6. Killed (-9): the server ends its session and the lock with it, and this one runs."""
    dsn = require_postgres()
    command = [sys.executable, "-c", HOLDER, dsn, SCHEMA]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            os.kill(holder.pid, signal.SIGSTOP)
            assert main(["migrate", "up", "--lock-timeout", "0.5", "-c", postgres_config]) == cli_store.BUSY
            assert "another migrator held the schema's lock for more than 0.5 s" in capsys.readouterr().err
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(30)
            # Waited for as long as the server takes to see the session gone (at once: the socket is closed).
            assert main(["migrate", "up", "--lock-timeout", "30", "-c", postgres_config]) == cli_store.OK
        finally:
            if holder.poll() is None:
                holder.kill()
    rows = postgres_fetch(dsn, f"SELECT count(*) FROM {SCHEMA}.schema_migrations")
    assert rows[0][0] == LATEST


HOLDER = """
import asyncio, sys
import asyncpg

async def main():
    conn = await asyncpg.connect(sys.argv[1])
    await conn.execute("SELECT pg_advisory_lock(hashtext('gateway.schema:' || $1::text))", sys.argv[2])
    print("locked", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "soon"])
@pytest.mark.parametrize("command", [["store", "check", "--timeout"], ["migrate", "up", "--lock-timeout"]])
def test_a_time_limit_is_a_positive_number_of_seconds(
    sqlite_config: str, capsys, command: list[str], value: str
) -> None:
    # Taken, they had been told as "no answer within 0 s" (exit 3) or "another migrator held the lock for more than
    # nan s" (exit 6), of a store that was fine.
    with pytest.raises(SystemExit) as exited:
        main([*command[:-1], f"{command[-1]}={value}", "-c", sqlite_config])  # =: "-1" is not taken for an option
    assert exited.value.code == cli_store.USAGE
    assert "seconds" in capsys.readouterr().err
