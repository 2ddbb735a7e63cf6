"""Limits on a request's head, enforced while it arrives, before any of it reaches the app: its URL
(`RSS_MAX_URL_BYTES`, 414), the whole head (`RSS_MAX_HEADER_BYTES`, 431) and the time it takes to arrive
(`RSS_HEADER_TIMEOUT_S`, 408 and the connection closed).

uvicorn's httptools protocol has none of them: a 64 MiB header was read whole (httptools concatenates a
header's pieces, 3.5 s of CPU) and a head that never ends held its connection for good. `rss serve` runs
uvicorn with `LimitedHttpToolsProtocol`, which counts the head's bytes as they come, answers as soon as one
chunk takes the count over a limit, and arms a timer when a head begins (its connection opened, or its first
byte after a keep-alive wait). Bodies are limited by the app (`RSS_MAX_BODY_BYTES`, `LimitAndMeasure`).
"""

from __future__ import annotations

import json
import logging

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reward_service.core.config import get_settings

log = logging.getLogger(__name__)


class HeadRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the request head's size and arrival time."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.max_url, self.max_head = settings.max_url_bytes, settings.max_header_bytes
        self.head_timeout = settings.header_timeout_s
        self._in_head = True  # until the current request's headers are complete
        self._head_bytes = 0
        self._head_timer = None

    # the head's clock ------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # from the accept: a connection that never sends a full head is dropped too

    def _arm(self) -> None:
        if self._head_timer is None and self.head_timeout:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._refuse(408, f"The request's headers did not arrive within {self.head_timeout:g} s "
                              "(RSS_HEADER_TIMEOUT_S).")
        else:  # nothing sent at all: nobody to answer
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    # the head's size --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_head:
            self._arm()  # after a keep-alive wait, the clock starts with the next request's first byte
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadRefused):
                self._refuse(exc.__context__.status, exc.__context__.detail)
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and not self.transport.is_closing():
            # the head is not complete yet: everything counted since it began is head
            url = len(getattr(self, "url", b""))
            if url > self.max_url:
                self._refuse(414, self._url_detail())
            elif self._head_bytes > self.max_head:
                self._refuse(431, self._head_detail())

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_url:
            raise HeadRefused(414, self._url_detail())

    def on_headers_complete(self) -> None:
        # exact, whatever the chunks: the request line and each header line, as sent
        size = len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head:
            raise HeadRefused(431, self._head_detail())
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # what comes next is the next request's head

    def _url_detail(self) -> str:
        return f"The request's URL exceeds the limit of {self.max_url} bytes (RSS_MAX_URL_BYTES)."

    def _head_detail(self) -> str:
        return f"The request's headers exceed the limit of {self.max_head} bytes (RSS_MAX_HEADER_BYTES)."

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with a JSON detail and close: the rest of the head is still on the connection."""
        self._disarm()
        self._in_head = False
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("%s: %d: %s", client, status, detail)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined request behind one still answering: no room for an answer
            return
        body = json.dumps({"detail": detail}).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
