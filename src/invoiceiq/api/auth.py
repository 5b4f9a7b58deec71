"""`Authorization: Bearer <api key>` for /api/v1: the key names its merchant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from invoiceiq.api import service as api_service
from invoiceiq.api.errors import InvalidApiKey
from invoiceiq.deps import SessionDep
from invoiceiq.merchants.models import Merchant

# auto_error=False: a missing or malformed header gets our 401 in the DESIGN §3 shape.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A merchant API key, printed once by `invoiceiq merchant api-key MSISDN`.",
)


async def current_merchant(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Merchant:
    if credentials is None:
        raise InvalidApiKey()
    merchant = await api_service.authenticate(session, credentials.credentials)
    if merchant is None:
        raise InvalidApiKey()
    return merchant


CurrentMerchant = Annotated[Merchant, Depends(current_merchant)]
