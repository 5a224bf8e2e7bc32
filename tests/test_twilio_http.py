"""The HTTP client careflow gives the Twilio SDK honours the proxy and CA settings operators set."""

from __future__ import annotations

import pytest
import urllib3

from careflow.channels.twilio_http import PooledHttpClient
from careflow.testing.twilio_server import FakeTwilio


def test_a_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    proxied = PooledHttpClient("https://api.twilio.com", timeout=5)
    assert isinstance(proxied.pool, urllib3.ProxyManager)
    assert proxied.proxy == "http://proxy.internal:3128"

    monkeypatch.setenv("NO_PROXY", "api.twilio.com")
    direct = PooledHttpClient("https://api.twilio.com", timeout=5)
    assert direct.proxy is None and not isinstance(direct.pool, urllib3.ProxyManager)


def test_the_ca_bundle_operators_point_requests_at_is_the_one_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/company/ca.pem")
    client = PooledHttpClient("https://api.twilio.com", timeout=5)
    assert client.pool.connection_pool_kw["ca_certs"] == "/etc/company/ca.pem"
    assert client.pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"


def test_no_answer_is_an_oserror_and_the_post_is_not_retried(fake_twilio: FakeTwilio) -> None:
    from careflow.testing.twilio_server import Fault

    fake_twilio.queue_faults(Fault(status=503, hang_seconds=1.0))
    client = PooledHttpClient(fake_twilio.url, timeout=0.3)
    url = f"{fake_twilio.url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    with pytest.raises(OSError, match="did not answer"):
        client.request(
            "POST",
            url,
            data={"To": "+8613800000000", "From": "+15005550006", "Body": "hi"},
            auth=(fake_twilio.account_sid, fake_twilio.auth_token),
        )
    assert fake_twilio.requests == 1  # a POST that may have arrived is never sent again by the client
