"""Request bodies read with a ceiling: refused (413) as soon as they pass it, never buffered whole.

Starlette's ``request.body()`` buffers the whole body, and its form parser keeps up to a
thousand fields of 1 MB each (files go to disk without a limit), so an endpoint that reads a
body before it knows who is calling lets anyone fill the server's memory or disk. Every
endpoint reads through :func:`capped` instead: a declared ``Content-Length`` above the limit is
refused before a byte is read, and a body sent without one (chunked) is counted as it streams.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Message

# Twilio's form posts (webhooks) and small HTML forms (sign-in, one-click unsubscribe).
SMALL_FORM_BYTES = 16 * 1024


class BodyTooLarge(Exception):
    """The body is (or declares to be) longer than the endpoint accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body too large: at most {limit:,} bytes")
        self.limit = limit


def capped(request: Request, limit: int) -> Request:
    """The same request, whose body reads (``body``, ``stream``, ``form``) stop past ``limit`` bytes.

    Raises :class:`BodyTooLarge` at once when ``Content-Length`` declares more, otherwise from the
    body read that passes the limit; at most one transport chunk beyond it is ever received.
    """
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    receive_next = request.receive
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await receive_next()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return Request(request.scope, receive)


def too_large(exc: BodyTooLarge) -> PlainTextResponse:
    """The answer to a body over the limit; the connection is closed, the rest never read."""
    return PlainTextResponse(str(exc), status_code=413, headers={"Connection": "close"})
