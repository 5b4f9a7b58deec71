"""The application's error base: a stable code, an HTTP status and a message fit for people."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """An error we expect and can explain. `message` is shown to people; keep it plain."""

    code = "error"
    status_code = 400
    message = "Something went wrong."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status_code: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.status_code = status_code or self.status_code
        self.fields = fields
        super().__init__(self.message)


class NotFound(AppError):
    code = "not_found"
    status_code = 404
    message = "Not found."


class Conflict(AppError):
    code = "conflict"
    status_code = 409
    message = "That conflicts with the current state."


class Unauthorized(AppError):
    code = "unauthorized"
    status_code = 401
    message = "Authentication required."


class Forbidden(AppError):
    code = "forbidden"
    status_code = 403
    message = "Not allowed."


class ServiceUnavailable(AppError):
    code = "unavailable"
    status_code = 503
    message = "Not ready yet; try again shortly."


def error_body(
    code: str, message: str, error_id: str, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The error shape of DESIGN §3."""
    error: dict[str, Any] = {"code": code, "message": message, "error_id": error_id}
    if fields:
        error["fields"] = fields
    return {"error": error}
