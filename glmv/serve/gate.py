"""Refuse requests before reading their body: a missing or wrong API key (401), a body over the size limit (413).

This runs as ASGI middleware, outside FastAPI, so an unauthenticated or oversized request costs no parsing
and no memory. A body without Content-Length (chunked) is counted as it arrives and cut off at the limit.
"""

from __future__ import annotations

import hmac
import json

from glmv.serve.errors import BodyTooLargeError, error_body

OPEN_PATHS = ("/health", "/", "/static/", "/favicon.ico")  # the page must load before it can send a key


class Gate:
    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key and not _is_open(scope["path"]) and not self._authorized(headers.get(b"authorization", b"")):
            return await _refuse(send, 401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                                 "invalid_api_key")
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            return await _refuse(send, 413, f"the request body is {int(length)} bytes, over the limit of "
                                 f"{self.max_body}", "request_too_large")
        await self.app(scope, self._capped(receive), send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    def _capped(self, receive):
        seen = 0

        async def capped_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise BodyTooLargeError(f"the request body is over the limit of {self.max_body} bytes")
            return message

        return capped_receive


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


async def _refuse(send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(message, status, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
