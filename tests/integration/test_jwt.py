"""JWT bearer tokens: HS256 with a shared secret, RS256 from a JWKS served on loopback — each failure a clear 401."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import running
from tests.integration.helpers import assert_error_shape
from tests.servers import serve

SECRET = "s" * 40
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "ada", "team": "t1", "project": "p1", "role": "developer", "iss": "https://idp.test",
            "aud": "gateway", "exp": now + 300, "nbf": now - 10}  # fmt: skip
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def chat(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token}"})


class Jwks:
    """A JWKS endpoint whose keys the test can rotate."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0

    def add(self, kid: str, private: Any, algorithm: Any = RSAAlgorithm) -> None:
        jwk = orjson.loads(algorithm.to_jwk(private.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256" if algorithm is RSAAlgorithm else "ES256"})

    async def endpoint(self, request: Request) -> Response:
        self.fetches += 1
        return Response(orjson.dumps({"keys": self.keys}), media_type="application/json")


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture
def hs_gateway(make_config):
    config = make_config(auth={"jwt": {"hs256_secret": SECRET, "issuer": "https://idp.test", "audience": "gateway"}})
    with running(config) as server:
        yield server


def test_hs256_token_carries_its_claims(hs_gateway):
    url, gateway = hs_gateway
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    response = chat(url, token)
    assert response.status_code == 200, response.text


# The claims are made when the test runs, not when it is collected: a token made at collection expired (exp is
# 300 s out) before a full run on a busy machine reached it, and then failed as expired instead of the error tested.
@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"exp": -3600}, "token_expired", "expired"),
        ({"aud": "someone-else"}, "invalid_audience", "audience"),
        ({"iss": "https://evil.test"}, "invalid_issuer", "issuer"),
        ({"sub": None}, "missing_claim", "'sub'"),
        ({"exp": None}, "missing_claim", "'exp'"),
        ({"nbf": 3600}, "token_not_yet_valid", "not valid yet"),
        ({"role": "root"}, "invalid_claim", "role"),
    ],
)
def test_hs256_failures_are_distinct_401s(hs_gateway, overrides, code, words):
    url, _ = hs_gateway
    now = int(time.time())  # exp and nbf above are seconds from now
    payload = claims(**{k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in overrides.items()})
    error = assert_error_shape(chat(url, jwt.encode(payload, SECRET, algorithm="HS256")), 401, code=code)
    assert error["type"] == "authentication_error"
    assert words in error["message"]


def test_hs256_wrong_secret_and_leeway(hs_gateway):
    url, _ = hs_gateway
    forged = jwt.encode(claims(), "x" * 40, algorithm="HS256")
    assert_error_shape(chat(url, forged), 401, code="invalid_signature")
    # Expired 10 s ago: within the 30 s leeway for clock skew.
    assert chat(url, jwt.encode(claims(exp=int(time.time()) - 10), SECRET, algorithm="HS256")).status_code == 200
    assert_error_shape(chat(url, "aaa.bbb.ccc"), 401, code="invalid_token")


def test_rs256_from_jwks_with_rotation(make_config, rsa_keys):
    jwks = Jwks()
    jwks.add("k1", rsa_keys[0])
    issuer_app = Starlette(routes=[Route("/jwks.json", jwks.endpoint)])
    with serve(issuer_app) as issuer:
        jwt_config = {"jwks_url": f"{issuer}/jwks.json", "audience": "gateway", "jwks_min_refresh_s": 0}
        with running(make_config(auth={"jwt": jwt_config})) as (url, _):
            good = jwt.encode(claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
            assert chat(url, good).status_code == 200
            fetched = jwks.fetches
            assert chat(url, good).status_code == 200
            assert jwks.fetches == fetched  # cached: no fetch per request

            # Signed by another key under a known kid: the signature fails.
            forged = jwt.encode(claims(), rsa_keys[1], algorithm="RS256", headers={"kid": "k1"})
            assert_error_shape(chat(url, forged), 401, code="invalid_signature")

            unknown = jwt.encode(claims(), rsa_keys[2], algorithm="RS256", headers={"kid": "k9"})
            error = assert_error_shape(chat(url, unknown), 401, code="unknown_kid")
            assert "k9" in error["message"]

            # The issuer rotates in a new key: the unknown kid triggers a refresh that finds it.
            jwks.add("k2", rsa_keys[1])
            rotated = jwt.encode(claims(), rsa_keys[1], algorithm="RS256", headers={"kid": "k2"})
            assert chat(url, rotated).status_code == 200

            expired = jwt.encode(claims(exp=int(time.time()) - 3600), rsa_keys[0], algorithm="RS256",
                                 headers={"kid": "k1"})  # fmt: skip
            assert_error_shape(chat(url, expired), 401, code="token_expired")
            wrong_aud = jwt.encode(claims(aud="other"), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
            assert_error_shape(chat(url, wrong_aud), 401, code="invalid_audience")
            no_sub = jwt.encode(claims(sub=None), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
            assert_error_shape(chat(url, no_sub), 401, code="missing_claim")
            # An HS256 token is refused when only a JWKS is configured (no algorithm confusion).
            hs = jwt.encode(claims(), "k" * 40, algorithm="HS256")
            assert_error_shape(chat(url, hs), 401, code="unsupported_algorithm")


def test_es256_from_jwks(make_config):
    private = ec.generate_private_key(ec.SECP256R1())
    jwks = Jwks()
    jwks.add("ec1", private, ECAlgorithm)
    with serve(Starlette(routes=[Route("/jwks.json", jwks.endpoint)])) as issuer:
        config = make_config(auth={"jwt": {"jwks_url": f"{issuer}/jwks.json"}})
        with running(config) as (url, _):
            token = jwt.encode(claims(aud=None, iss=None), private, algorithm="ES256", headers={"kid": "ec1"})
            assert chat(url, token).status_code == 200


def test_unknown_kid_refetches_at_most_once_per_interval(make_config, rsa_keys):
    jwks = Jwks()
    jwks.add("k1", rsa_keys[0])
    with serve(Starlette(routes=[Route("/jwks.json", jwks.endpoint)])) as issuer:
        jwt_config = {"jwks_url": f"{issuer}/jwks.json", "audience": "gateway", "jwks_min_refresh_s": 60}
        with running(make_config(auth={"jwt": jwt_config})) as (url, _):
            start = jwks.fetches
            for i in range(10):
                token = jwt.encode(claims(), rsa_keys[2], algorithm="RS256", headers={"kid": f"bogus{i}"})
                assert_error_shape(chat(url, token), 401, code="unknown_kid")
            assert jwks.fetches - start <= 1
