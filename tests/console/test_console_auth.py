"""Entra access tokens for the console in Azure (shared/console_auth.py): real RS256 tokens, signing keys served
over HTTP to PyJWT's key client, the way the tenant's JWKS endpoint serves them."""

from __future__ import annotations

import time

import jwt
import pytest

from shared.console_auth import ConsoleAuthError, EntraTokenValidator
from tests.console.entra_keys import CLIENT, ROGUE, ROLE, SIGNING, TENANT


@pytest.fixture
def validator(authority: str) -> EntraTokenValidator:
    return EntraTokenValidator(TENANT, CLIENT, ROLE, authority=authority)


def token(authority: str, key=SIGNING, **overrides) -> str:
    now = int(time.time())
    claims = {"aud": CLIENT, "iss": f"{authority}/{TENANT}/v2.0", "tid": TENANT, "iat": now, "nbf": now,
              "exp": now + 3600, "name": "Ana Operator", "roles": [ROLE]}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def test_an_operator_may_act_and_a_viewer_may_only_look(validator: EntraTokenValidator, authority: str) -> None:
    ana = validator.validate(token(authority))
    assert ana.user == "Ana Operator" and ana.can_act is True
    bo = validator.validate(token(authority, name="Bo", roles=["Switchboard.Viewer"]))
    assert bo.can_act is False
    assert validator.validate(token(authority, roles=None, aud=f"api://{CLIENT}")).can_act is False


@pytest.mark.parametrize("case", ["no header", "basic", "rogue key", "expired", "other audience", "other issuer",
                                  "other tenant", "no exp", "alg none", "garbage", "huge"])
def test_refused_tokens(validator: EntraTokenValidator, authority: str, case: str) -> None:
    header = {
        "no header": None,
        "basic": "Basic dXNlcjpwYXNz",
        "rogue key": token(authority, key=ROGUE),
        "expired": token(authority, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        "other audience": token(authority, aud="99999999-2222-3333-4444-555555555555"),
        "other issuer": token(authority, iss="https://login.microsoftonline.com/common/v2.0"),
        "other tenant": token(authority, tid="99999999-2222-3333-4444-555555555555"),
        "no exp": token(authority, exp=None),
        "alg none": "Bearer " + jwt.encode({"aud": CLIENT, "roles": [ROLE]}, None, algorithm="none"),
        "garbage": "Bearer not.a.token",
        "huge": "Bearer " + "a" * 20_000,
    }[case]
    with pytest.raises(ConsoleAuthError):
        validator.validate(header)


def test_ids_must_be_guids() -> None:
    with pytest.raises(ValueError):
        EntraTokenValidator("contoso.onmicrosoft.com", CLIENT, ROLE)
