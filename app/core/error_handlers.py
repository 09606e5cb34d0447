"""The one error envelope, and the handlers that put every error into it.

Shape: {"errors": {"body": [messages]}, "code": "<snake_case>", "request_id": "<id>"}.
Framework errors (404, 405, malformed JSON, validation) and unhandled exceptions are converted
here, so no response leaves the app in another shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.logging_config import get_logger
from app.core.request_context import current_request_id

log = get_logger(__name__)

DB_RETRY_AFTER_SECONDS = 5
GENERIC_500 = "An internal error occurred; quote the request id when reporting it."
DATA_ERROR_MESSAGE = "a value in the request is out of range or is not valid text"


class AppError(Exception):
    """Base of every error the app raises on purpose. Services raise these, never HTTPException."""

    status_code = 500
    code = "internal_error"
    message = "An internal error occurred"

    def __init__(
        self,
        message: str | Sequence[str] | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        text = message if message is not None else self.message
        self.messages: list[str] = [text] if isinstance(text, str) else list(text)
        if code:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__("; ".join(self.messages))


class BadRequestError(AppError):
    status_code, code, message = 400, "bad_request", "The request is malformed"


class UnauthorizedError(AppError):
    status_code, code, message = 401, "unauthorized", "Authentication required"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Token"})


class ForbiddenError(AppError):
    status_code, code, message = 403, "forbidden", "You are not allowed to do that"


class NotFoundError(AppError):
    status_code, code, message = 404, "not_found", "Not found"


class ConflictError(AppError):
    status_code, code, message = 409, "conflict", "Conflict"


class PayloadTooLargeError(AppError):
    status_code, code, message = 413, "payload_too_large", "The request body is too large"


class UnsupportedMediaTypeError(AppError):
    status_code, code, message = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailedError(AppError):
    status_code, code, message = 422, "validation_error", "The request is invalid"


class RateLimitedError(AppError):
    # The same words for every limit (per client, per account): a refusal says neither which
    # limit refused nor that an email is an account.
    status_code, code = 429, "rate_limited"
    message = "Too many requests; retry after the time in Retry-After"


class ServiceUnavailableError(AppError):
    status_code, code, message = 503, "service_unavailable", "A dependency is unavailable"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        retry_after: int = DB_RETRY_AFTER_SECONDS,
    ) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class DatabaseUnavailableError(ServiceUnavailableError):
    code, message = "database_unavailable", "The database is unavailable; retry shortly"


def error_body(messages: Sequence[str], code: str, **extra: Any) -> dict[str, Any]:
    return {
        "errors": {"body": list(messages)},
        "code": code,
        "request_id": current_request_id(),
        **extra,
    }


def error_response(
    status_code: int,
    messages: Sequence[str],
    code: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        error_body(messages, code, **extra), status_code=status_code, headers=dict(headers or {})
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}
_STATUS_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
}


def _field_name(loc: Sequence[Any]) -> str:
    # ("body", "user", "email") -> "email"; ("query", "limit") -> "limit";
    # ("body", "article", "tagList", 3) -> "tagList". Only the first item names the source.
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        source, parts = parts[0], parts[1:]
    else:
        source = "body"
    parts = [p for p in parts if not p.isdigit()]
    return parts[-1] if parts else source


def validation_messages(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    messages: list[str] = []
    for err in errors:
        kind = err.get("type", "")
        if kind == "json_invalid":
            messages.append("body is not valid JSON")
            continue
        field = _field_name(err.get("loc", ()))
        if kind == "missing":
            text = "can't be blank"
        else:
            text = str(err.get("msg", "is invalid"))
            text = text.removeprefix("Value error, ")
            text = text[0].lower() + text[1:] if text else "is invalid"
        messages.append(f"{field} {text}")
    return list(dict.fromkeys(messages))


async def _app_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)  # nosec B101 # registered for this type only
    if exc.status_code >= 500:
        log.warning("request_failed_dependency", code=exc.code, error=str(exc))
    return error_response(exc.status_code, exc.messages, exc.code, exc.headers)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # nosec B101 # registered for this type only
    status = exc.status_code
    if status >= 500:
        return error_response(status, [GENERIC_500], "internal_error", exc.headers)
    detail = exc.detail if isinstance(exc.detail, str) else None
    message = _STATUS_MESSAGES.get(status) or detail or "Request failed"
    code = _STATUS_CODES.get(status, "http_error")
    return error_response(status, [message], code, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # nosec B101 # registered for this type only
    return error_response(422, validation_messages(exc.errors()), "validation_error")


def is_invalid_value(error: BaseException) -> bool:
    """SQLSTATE class 22 ("data exception"): a value cannot be stored (int64 overflow, NUL,
    unencodable text), whether the server or the driver's argument encoding refused it."""
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


async def _database_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, sa_exc.DBAPIError)  # nosec B101 # registered for this type only
    if not is_invalid_value(exc):
        raise exc  # a real failure: the request context middleware logs it and answers 500
    log.warning(
        "request_value_rejected",
        error=type(exc.orig).__name__,
        sqlstate=getattr(exc.orig, "sqlstate", None),
    )
    return error_response(422, [DATA_ERROR_MESSAGE], "invalid_value")


def unhandled_error_response(exc: BaseException, *, expose: bool) -> JSONResponse:
    """The 500 body: generic in production, the exception's text when `expose` (development)."""
    message = f"{type(exc).__name__}: {exc}" if expose else GENERIC_500
    return error_response(500, [message], "internal_error")


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
