"""Who may use the operator console in Azure: Microsoft Entra ID access tokens, validated in the app with PyJWT.

Why not App Service built-in authentication (Easy Auth): the Flex Consumption plan documentation says EasyAuth is
not supported there and that unauthenticated callers are not blocked when it is enabled (docs/console.md,
"Auth in Azure", with the source). An app that trusted Easy Auth's ``X-MS-CLIENT-PRINCIPAL`` header on Flex would
trust a header anyone can send. So the browser signs in itself (authorization code + PKCE, the console's
JavaScript) and sends the access token as ``Authorization: Bearer``; this module checks it:

- signature: RS256 against the tenant's published signing keys (JWKS, fetched once and cached by PyJWT's
  ``PyJWKClient``; a token with an unknown ``kid`` refetches them, which is how key rollover is picked up);
- ``aud`` = the console's app registration (its client id, or ``api://<client id>``), ``iss`` = the tenant
  (v2.0 or v1 issuer), ``exp``/``nbf`` with a small leeway, and ``tid`` = the tenant;
- the app role (``roles`` claim) decides whether the user may act (hang up, transfer) or only look.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import jwt

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_TOKEN_CHARS = 16_000
LEEWAY_S = 60


class ConsoleAuthError(Exception):
    """The request carries no usable token (answered 401; the reason is never shown with data)."""


@dataclass(frozen=True)
class Principal:
    user: str
    can_act: bool


class EntraTokenValidator:
    def __init__(self, tenant_id: str, client_id: str, operator_role: str, *,
                 authority: str = "https://login.microsoftonline.com", jwks_client: Any = None) -> None:
        if not _GUID.fullmatch(tenant_id or "") or not _GUID.fullmatch(client_id or ""):
            raise ValueError("the console's Entra tenant id and client id must be GUIDs")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.operator_role = operator_role
        self.audiences = [client_id, f"api://{client_id}"]
        self.issuers = [f"{authority}/{tenant_id}/v2.0", f"https://sts.windows.net/{tenant_id}/"]
        self._jwks = jwks_client or jwt.PyJWKClient(f"{authority}/{tenant_id}/discovery/v2.0/keys",
                                                    cache_keys=True, lifespan=3600, timeout=10)

    def validate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer <token>`` header value; raises ConsoleAuthError."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ConsoleAuthError("sign in first (no bearer token)")
        if len(token) > MAX_TOKEN_CHARS:
            raise ConsoleAuthError("the token is too long")
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=self.audiences,
                                issuer=self.issuers, leeway=LEEWAY_S,
                                options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.PyJWTError as exc:
            raise ConsoleAuthError(f"the token was refused ({type(exc).__name__})") from None
        if claims.get("tid") not in (None, self.tenant_id):
            raise ConsoleAuthError("the token is from another tenant")
        roles = claims.get("roles") or []
        name = claims.get("name") or claims.get("preferred_username") or claims.get("upn") or "signed-in user"
        return Principal(user=str(name)[:128], can_act=isinstance(roles, list) and self.operator_role in roles)

    async def validate_async(self, authorization: str | None) -> Principal:
        """``validate`` off the event loop: a key fetch (first use, rollover) is blocking HTTP in PyJWT."""
        return await asyncio.to_thread(self.validate, authorization)
