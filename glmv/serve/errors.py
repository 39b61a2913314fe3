"""Every error the server sends is OpenAI-shaped: {"error": {"message", "type", "param", "code"}}.

Clients (the official `openai` package among them) pick the exception class from the status and show
`message`, so the status must be the right one and the message must say what to fix. Unexpected exceptions
become a generic 500: the traceback goes to the server log, never to the client.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from glmv.errors import GlmvError

log = logging.getLogger(__name__)


class AuthError(GlmvError):
    http_status = 401
    code = "invalid_api_key"


class ModelNotFoundError(GlmvError):
    http_status = 404
    code = "model_not_found"


class BodyTooLargeError(GlmvError):
    http_status = 413
    code = "request_too_large"


def error_body(message: str, status: int, code: str | None = None, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(message: str, status: int, code: str | None = None, param: str | None = None) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(error_body(message, status, code, param), status_code=status, headers=headers)


def glmv_error_response(e: GlmvError) -> JSONResponse:
    if e.http_status >= 500:
        log.error("request failed: %s", e)
    return error_response(str(e), e.http_status, e.code)


def validation_error_response(e: ValidationError) -> JSONResponse:
    """Pydantic's report on the request body -> 400 naming the first offending field (as OpenAI does)."""
    first = e.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return error_response(f"the request body is not valid JSON ({first['msg']})", 400, "invalid_json")
    param = ".".join(str(p) for p in first["loc"]) or None
    where = f"'{param}': " if param else ""
    kind = first["type"]
    code = "missing_required_parameter" if kind == "missing" else "invalid_type" if kind.endswith("_type") else "invalid_value"
    return error_response(f"{where}{first['msg']}", 400, code, param)


def sse_error(e: GlmvError) -> str:
    """An error after a stream has started: headers are sent, so it travels as one more event."""
    return f"data: {json.dumps(error_body(str(e), e.http_status, e.code))}\n\n"


def internal_error_response() -> JSONResponse:
    return error_response("internal server error; see the server log", 500, "internal_error")


def contained(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A route whose unexpected exceptions become a 500 body here, inside the route: Starlette's last-resort
    handler would answer too, but then re-raise, and the server would drop the client's keep-alive connection."""
    @functools.wraps(handler)
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except (GlmvError, ValidationError, HTTPException, ClientDisconnect):
            raise  # the handlers below answer these
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return internal_error_response()
    return route


def install_error_handlers(app: FastAPI) -> None:
    async def on_glmv(_: Request, e: GlmvError) -> JSONResponse:
        return glmv_error_response(e)

    async def on_validation(_: Request, e: ValidationError) -> JSONResponse:
        return validation_error_response(e)

    async def on_http(_: Request, e: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return error_response(str(e.detail), e.status_code, code)

    async def on_disconnect(_: Request, e: ClientDisconnect) -> Response:
        return Response(status_code=499)  # the client left while sending its body: no one reads this

    async def on_unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return internal_error_response()

    app.add_exception_handler(GlmvError, on_glmv)
    app.add_exception_handler(ValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
