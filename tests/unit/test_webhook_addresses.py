"""Which addresses a webhook may go to (core/net.py), its signature and its backoff."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import random
import re
from pathlib import Path

import pytest

from core.net import UnsafeURL, check_url, parse_url, refusal
from core.settings import Settings
from worker.webhook_sender import body_of, retry_at, signature


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "100.64.0.1", "192.0.2.1",
    "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "2002:7f00:1::", "64:ff9b::7f00:1",
])
def test_non_global_addresses_are_refused(address):
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8"])
def test_global_addresses_are_allowed(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_urls_are_parsed_strictly():
    assert parse_url("https://example.com/x") == ("https", "example.com", 443)
    assert parse_url("http://[2606:4700::1]:8080/") == ("http", "2606:4700::1", 8080)
    for bad in ("ftp://example.com/", "http:///x", "http://u:p@example.com/",
                "http://example.com:99999/", "javascript:alert(1)"):
        with pytest.raises(UnsafeURL):
            parse_url(bad)


def test_the_setting_allows_private_addresses():
    with pytest.raises(UnsafeURL, match="loopback"):
        check_url("http://127.0.0.1:8000/")
    assert check_url("http://127.0.0.1:8000/", allow_private=True).port == 8000


def test_the_signature_is_the_hmac_of_the_exact_body():
    body = body_of({"id": "e", "type": "job.failed", "data": {"b": 1, "a": "é"}})
    assert body == '{"data":{"a":"é","b":1},"id":"e","type":"job.failed"}'.encode()
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signature("key", body) == f"sha256={expected}"


def test_backoff_doubles_with_jitter_and_stops_at_the_window():
    settings = Settings(webhooks_retry_base_seconds=10, webhooks_retry_max_seconds=3600,
                        webhooks_retry_for_seconds=24 * 3600)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rng = random.Random(1)
    for attempts, base in ((1, 10), (2, 20), (5, 160), (20, 3600)):
        wait = (retry_at(attempts, start, start, settings, rng) - start).total_seconds()
        assert base * 0.5 <= wait <= base
    late = start + dt.timedelta(hours=23, minutes=59)
    assert retry_at(20, start, late, settings, rng) is None


def test_the_verify_example_in_the_docs_works_as_written():
    source = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    code = re.search(r"## Verify a delivery \(Python\)\n\n```python\n(.*?)```", source,
                     re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own documentation
    body = body_of({"id": "e1", "type": "job.failed", "data": {"id": 1}})
    headers = {"X-Trainyard-Delivery": "e1", "X-Trainyard-Signature":
               signature("the secret POST /webhooks answered", body)}
    assert namespace["handle"](headers, body) == 200
    assert namespace["handle"](headers, body) == 200  # a duplicate: accepted, dropped
    assert namespace["handle"](headers, body + b" ") == 401  # a changed body
