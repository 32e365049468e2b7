"""Entra access tokens for the console in Azure (shared/console_auth.py): real RS256 tokens, signing keys served
over HTTP to PyJWT's key client, the way the tenant's JWKS endpoint serves them."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

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


class KeysStandIn:
    """The tenant's published keys without HTTP (the validator's jwks_client): the real signing key."""

    def __init__(self) -> None:
        self.asked = 0

    def get_signing_key_from_jwt(self, token: str) -> Any:
        self.asked += 1
        return SimpleNamespace(key=SIGNING.public_key())


def entra_token(**overrides: Any) -> str:
    """A token as Entra ID issues it for the tenant (the public cloud's issuer)."""
    return token("https://login.microsoftonline.com", **overrides)


@pytest.fixture
def public_cloud() -> EntraTokenValidator:
    return EntraTokenValidator(TENANT, CLIENT, ROLE, jwks_client=KeysStandIn())


def test_the_public_cloud_issuers_are_accepted(public_cloud: EntraTokenValidator) -> None:
    assert (public_cloud.tenant_id, public_cloud.client_id, public_cloud.operator_role) == (TENANT, CLIENT, ROLE)
    assert public_cloud.validate(entra_token()).can_act is True  # v2.0 issuer
    assert public_cloud.validate(entra_token(iss=f"https://sts.windows.net/{TENANT}/")).can_act is True  # v1
    with pytest.raises(ConsoleAuthError):
        public_cloud.validate(entra_token(iss=f"https://sts.windows.net/{TENANT}/v2.0"))


def test_the_keys_come_from_the_tenants_discovery_document(authority: str) -> None:
    validator = EntraTokenValidator(TENANT, CLIENT, ROLE, authority=authority)
    assert validator.validate(token(authority)).user == "Ana Operator"  # fetched from <authority>/<tenant>/...
    elsewhere = EntraTokenValidator("99999999-2222-3333-4444-555555555555", CLIENT, ROLE, authority=authority)
    with pytest.raises(ConsoleAuthError, match="the token was refused"):  # another tenant's keys: not served
        elsewhere.validate(token(authority))


@pytest.mark.parametrize("header", ["bearer {t}", "BEARER {t}", "Bearer  {t}", "Bearer {t} "])
def test_the_scheme_is_case_blind_and_spaces_around_the_token_do_not_matter(public_cloud: EntraTokenValidator,
                                                                             header: str) -> None:
    raw = entra_token().removeprefix("Bearer ")
    assert public_cloud.validate(header.format(t=raw)).can_act is True


@pytest.mark.parametrize("header", ["Basic {t}", "Token {t}", "{t}", "Bearer", "Bearer ", ""])
def test_a_valid_token_under_another_scheme_or_no_token_is_refused(public_cloud: EntraTokenValidator,
                                                                   header: str) -> None:
    raw = entra_token().removeprefix("Bearer ")
    with pytest.raises(ConsoleAuthError, match=r"^sign in first \(no bearer token\)$"):
        public_cloud.validate(header.format(t=raw))


def token_of_length(chars: int) -> str:
    """A valid token of exactly ``chars`` characters (padded with a claim and a header field; base64 rounds)."""
    now = int(time.time())
    claims = {"aud": CLIENT, "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "tid": TENANT, "iat": now,
              "exp": now + 3600, "name": "Ana Operator", "roles": [ROLE]}
    base = len(jwt.encode({**claims, "pad": ""}, SIGNING, algorithm="RS256", headers={"kid": "k1", "x": ""}))
    estimate = (chars - base) * 3 // 4
    for extra in range(4):
        for pad in range(max(0, estimate - 8), estimate + 8):
            raw = jwt.encode({**claims, "pad": "p" * pad}, SIGNING, algorithm="RS256",
                             headers={"kid": "k1", "x": "x" * extra})
            if len(raw) == chars:
                return raw
    raise AssertionError(f"no token of {chars} characters")


def test_a_token_up_to_16000_characters_is_read_and_a_longer_one_is_not(public_cloud: EntraTokenValidator) -> None:
    longest = token_of_length(16_000)  # docs/console.md
    assert public_cloud.validate(f"Bearer {longest}").can_act is True
    keys = public_cloud._jwks
    asked = keys.asked
    for too_long in (token_of_length(16_001), token_of_length(16_002)):
        with pytest.raises(ConsoleAuthError, match="^the token is too long$"):
            public_cloud.validate(f"Bearer {too_long}")
    assert keys.asked == asked  # refused before any key lookup


def test_clock_skew_of_up_to_a_minute_is_tolerated(public_cloud: EntraTokenValidator) -> None:
    now = int(time.time())
    assert public_cloud.validate(entra_token(exp=now - 30, iat=now - 3630)).can_act is True
    assert public_cloud.validate(entra_token(nbf=now + 30)).can_act is True
    for late in (entra_token(exp=now - 90, iat=now - 3690), entra_token(nbf=now + 90)):
        with pytest.raises(ConsoleAuthError, match=r"^the token was refused \((ExpiredSignatureError|"
                                                   r"ImmatureSignatureError)\)$"):
            public_cloud.validate(late)


def test_a_token_of_another_tenant_is_refused_even_with_the_right_audience_and_issuer(
        public_cloud: EntraTokenValidator) -> None:
    with pytest.raises(ConsoleAuthError, match="^the token is from another tenant$"):
        public_cloud.validate(entra_token(tid="99999999-2222-3333-4444-555555555555"))
    assert public_cloud.validate(entra_token(tid=None)).can_act is True  # v1 tokens may carry no tid


@pytest.mark.parametrize(("claims", "user"), [
    ({"name": None, "preferred_username": "ana@contoso.com", "upn": "ana.upn@contoso.com"}, "ana@contoso.com"),
    ({"name": None, "upn": "ana.upn@contoso.com"}, "ana.upn@contoso.com"),
    ({"name": None}, "signed-in user"),
    ({"name": "N" * 200}, "N" * 128),
])
def test_the_user_shown_is_the_name_then_the_sign_in_name(public_cloud: EntraTokenValidator, claims: dict,
                                                          user: str) -> None:
    assert public_cloud.validate(entra_token(**claims)).user == user


@pytest.mark.parametrize("roles", [ROLE, f"{ROLE}s", {"role": ROLE}, [f"{ROLE}.Viewer"], []])
def test_only_the_operator_role_in_the_roles_list_may_act(public_cloud: EntraTokenValidator, roles: Any) -> None:
    assert public_cloud.validate(entra_token(roles=roles)).can_act is False


@pytest.mark.parametrize(("tenant", "client"), [
    (TENANT.upper(), CLIENT.upper()), (TENANT, CLIENT),
])
def test_guids_in_either_case_are_accepted(tenant: str, client: str) -> None:
    assert EntraTokenValidator(tenant, client, ROLE, jwks_client=KeysStandIn()).client_id == client


@pytest.mark.parametrize(("tenant", "client"), [
    (None, CLIENT), (TENANT, None), ("", CLIENT), (TENANT, CLIENT[:-1]), (TENANT, CLIENT + "e"),
    (TENANT.replace("-", ""), CLIENT), ("{" + TENANT + "}", CLIENT), (TENANT, CLIENT.replace("a", "g")),
])
def test_ids_that_are_not_guids_are_refused(tenant: Any, client: Any) -> None:
    with pytest.raises(ValueError, match="the console's Entra tenant id and client id must be GUIDs"):
        EntraTokenValidator(tenant, client, ROLE, jwks_client=KeysStandIn())


async def test_validation_off_the_event_loop_gives_the_same_answers(public_cloud: EntraTokenValidator) -> None:
    assert (await public_cloud.validate_async(entra_token(name="Bo"))).user == "Bo"
    with pytest.raises(ConsoleAuthError, match="sign in first"):
        await public_cloud.validate_async(None)
