"""The simulator's control API (DESIGN §8): act as a phone, answer M-PESA prompts, set faults.

Paths are relative to the simulator's mount (`/simulator`). Every error, a malformed body
included, is JSON `{"error": {"code", "message", "fields"?}}`; the fakes' own routes keep the
error shapes of the providers they imitate, so this shape is applied by this router's route
class, not by the whole sub-application.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from invoiceiq.kit.phone import PhoneError, normalize_msisdn
from invoiceiq.simulator.config import PromptAction, SimulatorConfig
from invoiceiq.whatsapp.simulator import WebhookNotRegistered

if TYPE_CHECKING:
    from invoiceiq.simulator.app import Simulator

MSISDN_FORMAT = "12 digits starting 2547 or 2541, e.g. 254712345678"


class ControlError(Exception):
    """A refusal of the control API, rendered as `{"error": {...}}` with `status_code`."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields


def error_response(
    status_code: int, code: str, message: str, fields: dict[str, str] | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return JSONResponse({"error": error}, status_code=status_code)


def _validation_fields(exc: RequestValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in exc.errors():
        location = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path")]
        fields[".".join(location) or "request"] = str(item.get("msg", "invalid"))
    return fields


class ControlRoute(APIRoute):
    """Renders this router's refusals, malformed requests included, in the control API shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return error_response(
                    422, "validation_error", "Some fields are invalid.", _validation_fields(exc)
                )
            except ControlError as exc:
                return error_response(exc.status_code, exc.code, exc.message, exc.fields)

        return handle


def _msisdn(value: str, field: str) -> str:
    """`value` if it is a Kenyan mobile written as the providers write it (E.164 digits)."""
    try:
        normalized = normalize_msisdn(value)
    except PhoneError as exc:
        raise ControlError(
            422,
            "invalid_msisdn",
            f"{field} must be a Kenyan mobile, {MSISDN_FORMAT}: {exc.message}",
            {field: exc.reason},
        ) from None
    if normalized != value:
        raise ControlError(
            422,
            "invalid_msisdn",
            f"{field} must be written as {MSISDN_FORMAT}; here: {normalized}",
            {field: "format"},
        )
    return normalized


def path_msisdn(msisdn: str) -> str:
    return _msisdn(msisdn, "msisdn")


Msisdn = Annotated[str, Depends(path_msisdn)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhoneMessage(_Body):
    """Exactly one of: `text`; `button_id` (with `kind`); `raw` (a Cloud API message object)."""

    text: str | None = Field(default=None, min_length=1, max_length=4096)
    button_id: str | None = Field(default=None, min_length=1, max_length=256)
    kind: Literal["reply", "template"] = "reply"
    raw: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_message(self) -> PhoneMessage:
        given = [name for name in ("text", "button_id", "raw") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError('send exactly one of "text", "button_id" or "raw"')
        if "kind" in self.model_fields_set and self.button_id is None:
            raise ValueError('"kind" goes with "button_id"')
        return self


class MessageSent(BaseModel):
    wamid: str
    webhook_status: int


class LastInbound(_Body):
    at: AwareDatetime


class LastInboundSet(BaseModel):
    msisdn: str
    last_inbound_at: datetime


class PromptAnswer(_Body):
    action: PromptAction
    delay_ms: int = Field(default=0, ge=0, le=600_000)


class ResetDone(BaseModel):
    reset: bool = True


def build_control_router(simulator: Simulator) -> APIRouter:
    router = APIRouter(route_class=ControlRoute, tags=["simulator control"])

    @router.post("/phones/{msisdn}/messages")
    async def phone_writes(msisdn: Msisdn, body: PhoneMessage) -> MessageSent:
        """The phone writes to the business; answers once the app has answered the webhook
        (`webhook_status` 0: the app could not be reached)."""
        try:
            wamid, status = await simulator.whatsapp.phone_writes(
                msisdn, text=body.text, button_id=body.button_id, kind=body.kind, raw=body.raw
            )
        except WebhookNotRegistered:
            raise ControlError(
                409,
                "no_webhook",
                "No webhook is registered: POST /simulator/whatsapp/v1/configs/webhook first.",
            ) from None
        except ValueError as exc:
            raise ControlError(422, "invalid_message", str(exc)) from None
        return MessageSent(wamid=wamid, webhook_status=status)

    @router.get("/phones/{msisdn}/inbox")
    async def inbox(
        msisdn: Msisdn, after: Annotated[str | None, Query(max_length=256)] = None
    ) -> list[dict[str, Any]]:
        """What the phone received, oldest first; `after` a wamid: only what came after it."""
        return simulator.whatsapp.inbox(msisdn, after)

    @router.put("/phones/{msisdn}/last-inbound")
    async def last_inbound(msisdn: Msisdn, body: LastInbound) -> LastInboundSet:
        """When the phone last wrote to the business: moves its customer-service window."""
        simulator.whatsapp.set_last_inbound(msisdn, body.at)
        return LastInboundSet(msisdn=msisdn, last_inbound_at=body.at)

    @router.get("/mpesa/prompts")
    async def prompts(
        phone: Annotated[str | None, Query()] = None,
        state: Annotated[Literal["open", "answered"] | None, Query()] = None,
    ) -> list[dict[str, Any]]:
        """M-PESA PIN prompts (STK pushes), oldest first, optionally of one phone or state."""
        if phone is not None:
            phone = _msisdn(phone, "phone")
        return simulator.daraja.prompts(phone=phone, state=state)

    @router.post("/mpesa/prompts/{checkout_request_id}")
    async def answer_prompt(checkout_request_id: str, body: PromptAnswer) -> dict[str, Any]:
        """Answer a prompt as the customer would: 0 accept, 1032 cancel, 1037 timeout,
        2001 wrong PIN, 1 insufficient funds."""
        try:
            return await simulator.daraja.answer(
                checkout_request_id, body.action, delay_ms=body.delay_ms
            )
        except KeyError:
            raise ControlError(404, "not_found", "No prompt has that CheckoutRequestID.") from None
        except ValueError:
            raise ControlError(409, "conflict", "That prompt was already answered.") from None

    @router.get("/config")
    async def get_config() -> SimulatorConfig:
        return simulator.settings.config

    @router.put("/config")
    async def put_config(body: SimulatorConfig) -> SimulatorConfig:
        """Replace the whole config (fields left out take the values it started with: the
        defaults, and its app's customer window); re-seeds the dice."""
        simulator.configure(body)
        return simulator.settings.config

    @router.post("/reset")
    async def reset() -> ResetDone:
        """Forget messages, prompts and tokens; back to the start-up config and webhook."""
        simulator.reset()
        return ResetDone()

    return router
