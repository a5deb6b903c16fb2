"""Which Redis a URL names: one server (redis://, rediss://, unix://) or a Redis Cluster (redis+cluster://,
rediss+cluster:// with TLS), parsed here without a Redis client so that `gateway check` and the components that
connect agree on it.

A cluster URL lists seed nodes, any of which tells the client the rest of the cluster:
`redis+cluster://[user:password@]host:port[,host:port...][/]`. A cluster has one database, so no /db.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PLAIN = ("redis://", "rediss://")
CLUSTER = ("redis+cluster://", "rediss+cluster://")
SUPPORTED = "memory, redis://host:port/db or redis+cluster://host:port[,host:port...]"


@dataclass(frozen=True, slots=True)
class ClusterURL:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER)


def is_redis(url: str) -> bool:
    return url.startswith(PLAIN + CLUSTER)


def parse_cluster(url: str) -> ClusterURL:
    """Raises ValueError naming what is wrong."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    if path or "?" in netloc:
        raise ValueError("a cluster URL takes no database, path or options (a cluster has database 0 only)")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if colon else (None, unquote(user))
    nodes = []
    for node in hosts.split(","):
        host, colon, port = node.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # an IPv6 address in brackets
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a seed node must be host:port, not {node!r}")
        nodes.append((host, int(port)))
    return ClusterURL(tuple(nodes), username, password, tls=scheme == "rediss+cluster")


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a backend URL (state, limits, cache): None when it is memory or a Redis it can use."""
    if url == "memory":
        return None
    if url.startswith(PLAIN):
        return _plain_problem(url)
    if not is_cluster(url):
        return f"supported: {SUPPORTED}"
    try:
        parse_cluster(url)
    except ValueError as exc:
        return str(exc)
    return None


def _plain_problem(url: str) -> str | None:
    # What the client's parse (redis-py's parse_url, when it connects) would raise at start-up, said here instead:
    # a port that is not a number, no host, a database that is not one.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"not a Redis URL: {exc}"
    if not parts.hostname:
        return "a Redis URL names a host: redis://host:port/db"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"the database is a number (redis://host:port/0), not {db!r}"
    return None
