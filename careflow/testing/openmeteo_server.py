"""A local HTTP server speaking Open-Meteo's daily forecast format, for tests (never the internet).

Each city is set up by its coordinates; days not set up are calm. It counts requests, and
can answer a city with an HTTP error or a malformed body to test failure handling.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

DAILY_UNITS = {
    "time": "iso8601",
    "weather_code": "wmo code",
    "temperature_2m_max": "°C",
    "temperature_2m_min": "°C",
    "precipitation_sum": "mm",
    "snowfall_sum": "cm",
    "wind_gusts_10m_max": "km/h",
}
CALM: dict[str, float | int] = {
    "weather_code": 1,
    "temperature_2m_max": 22.0,
    "temperature_2m_min": 15.0,
    "precipitation_sum": 0.0,
    "snowfall_sum": 0.0,
    "wind_gusts_10m_max": 20.0,
}

Coordinates = tuple[float, float]


class FakeOpenMeteo:
    """``with FakeOpenMeteo() as om: om.set_day((31.23, 121.47), date(...), precipitation_sum=80)``."""

    def __init__(self) -> None:
        self.days: dict[tuple[Coordinates, date], dict[str, Any]] = {}
        self.failures: dict[Coordinates, tuple[int, bytes]] = {}
        self.requests: list[dict[str, str]] = []
        self.delay_seconds = 0.0  # answer this much later (a slow provider, for concurrency tests)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1/forecast"

    def set_day(self, where: Coordinates, day: date, **values: Any) -> None:
        self.days[(where, day)] = values

    def fail(
        self, where: Coordinates, status: int = 500, body: bytes = b'{"error":true,"reason":"boom"}'
    ) -> None:
        """Answer requests for ``where`` with ``status`` and ``body`` (200 + junk = malformed)."""
        self.failures[where] = (status, body)

    def heal(self, where: Coordinates) -> None:
        self.failures.pop(where, None)

    def requests_for(self, where: Coordinates) -> int:
        return sum(1 for r in self.requests if (float(r["latitude"]), float(r["longitude"])) == where)

    def __enter__(self) -> FakeOpenMeteo:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _respond(self, query: dict[str, str]) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(query)
        time.sleep(self.delay_seconds)
        try:
            where = (float(query["latitude"]), float(query["longitude"]))
            start, end = date.fromisoformat(query["start_date"]), date.fromisoformat(query["end_date"])
        except (KeyError, ValueError) as exc:
            return 400, json.dumps({"error": True, "reason": f"Parameter missing or invalid: {exc}"}).encode()
        fields = query.get("daily", "").split(",")
        unknown = [f for f in fields if f not in DAILY_UNITS]
        if unknown:
            return 400, json.dumps({"error": True, "reason": f"Cannot initialize {unknown[0]}"}).encode()
        if where in self.failures:
            return self.failures[where]
        times = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        daily: dict[str, list[Any]] = {"time": [t.isoformat() for t in times]}
        for name in fields:
            daily[name] = [self.days.get((where, t), {}).get(name, CALM[name]) for t in times]
        body = {
            "latitude": where[0],
            "longitude": where[1],
            "generationtime_ms": 0.05,
            "utc_offset_seconds": 28800,
            "timezone": "Asia/Shanghai",
            "timezone_abbreviation": "GMT+8",
            "elevation": 4.0,
            "daily_units": {k: DAILY_UNITS[k] for k in ["time", *fields]},
            "daily": daily,
        }
        return 200, json.dumps(body).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                if parsed.path != "/v1/forecast":
                    status, body = 404, b'{"error":true,"reason":"Not Found"}'
                else:
                    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                    status, body = server._respond(query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
