"""The HTTP client careflow hands the Twilio SDK: urllib3's connection pool, settings read once.

The SDK's default client goes through ``requests``, whose per-call work (merging session
settings, re-reading proxy and CA variables from the environment, hooks, cookies) cost more
CPU than everything else careflow does to deliver a message. The SDK lets an application
bring its own ``HttpClient``; this one keeps what matters from the default: the same
timeout for connecting and reading, no automatic retries or redirects (a retried POST
could send a message twice), proxies from ``HTTPS_PROXY``/``NO_PROXY``, and the CA bundle
from ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (else certifi's). The environment is read
when the client is made, i.e. at start-up. It also remembers each thread's last response
headers: Retry-After never reaches ``TwilioRestException``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response

JSON_TYPES = ("application/json", "application/scim+json")


def _proxy_for(base_url: str) -> str | None:
    """The proxy the environment asks for to reach ``base_url``, as requests would pick it."""
    where = urlsplit(base_url)
    host = where.hostname or ""
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(host):
        return None
    return proxies.get(where.scheme) or proxies.get("all")


def _ca_bundle() -> str:
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()


class PooledHttpClient(HttpClient):  # type: ignore[misc]
    """A Twilio SDK ``HttpClient`` over one urllib3 pool shared by every thread of the process."""

    def __init__(self, base_url: str, *, timeout: float, max_connections: int = 32) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        ca = _ca_bundle()
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        tls["ca_cert_dir" if os.path.isdir(ca) else "ca_certs"] = ca
        self.proxy = _proxy_for(base_url)
        pool_options: dict[str, Any] = {"maxsize": max_connections, "block": False, "retries": False, **tls}
        self.pool: urllib3.PoolManager = (
            urllib3.ProxyManager(self.proxy, **pool_options)
            if self.proxy
            else urllib3.PoolManager(**pool_options)
        )
        self._seen = threading.local()

    def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """One HTTP call; connection failures and timeouts are ``OSError``s, as with requests."""
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        sent_headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            sent_headers["Authorization"] = f"Basic {token}"
        url = f"{uri}?{urlencode(params, doseq=True)}" if params else uri
        body: bytes | None = None
        if data is not None:
            if sent_headers.get("Content-Type") in JSON_TYPES:
                body = json.dumps(data).encode()
            else:
                body = urlencode(data, doseq=True).encode()
                sent_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        self._seen.headers = {}
        try:
            answer = self.pool.request(
                method.upper(),
                url,
                body=body,
                headers=sent_headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=allow_redirects,
                retries=False,
            )
        except urllib3.exceptions.TimeoutError as exc:
            raise TimeoutError(f"Twilio did not answer within {timeout} s") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        self._seen.headers = dict(answer.headers)
        return Response(answer.status, answer.data.decode("utf-8", errors="replace"), answer.headers)

    def last_headers(self) -> Mapping[str, str]:
        return getattr(self._seen, "headers", {})
