"""Webhook targets: what a tenant may aim the service at, checked with the system resolver and real
connections on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from app.egress import EgressPolicy, ForbiddenTarget, GuardedTransport

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:6379/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://localhost:8000/",
    "http://redis:6379/",
    "ftp://93.184.216.34/",
    "http://user:secret@93.184.216.34/",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", REFUSED)
def test_internal_and_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenTarget):
        EgressPolicy().check_url(url)


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "http://[2606:4700:4700::1111]:8080/x"])
def test_public_addresses_pass(url: str) -> None:
    EgressPolicy().check_url(url)


def test_allowlisted_hosts_pass_whatever_they_resolve_to() -> None:
    policy = EgressPolicy.from_hosts(["localhost", " 127.0.0.1 ", "[::1]"])
    for url in ("http://localhost:9000/hook", "http://127.0.0.1/", "http://[::1]:81/"):
        policy.check_url(url)
    with pytest.raises(ForbiddenTarget):
        policy.check_url("http://10.0.0.1/")


def test_a_public_name_that_rebinds_to_loopback_is_refused() -> None:
    answers = {"hooks.example.com": ["93.184.216.34"]}
    policy = EgressPolicy(resolver=lambda host, port: answers[host])
    policy.check_url("https://hooks.example.com/x")
    answers["hooks.example.com"] = ["93.184.216.34", "127.0.0.1"]
    with pytest.raises(ForbiddenTarget, match="127.0.0.1"):
        policy.check_url("https://hooks.example.com/x")


class _Receiver(BaseHTTPRequestHandler):
    hits: list[str]
    redirect_to: str | None = None

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.hits.append(self.path)
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str], type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"hits": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}", handler.hits, handler
    server.shutdown()


def post(policy: EgressPolicy, url: str) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=GuardedTransport(policy), follow_redirects=False) as client:
            return await client.post(url, content=b"{}")

    return asyncio.run(send())


def test_delivery_connects_only_to_checked_addresses(receiver: tuple[str, list[str], type]) -> None:
    address, hits, _ = receiver
    port = address.rsplit(":", 1)[1]
    # "localhost" resolves to 127.0.0.1 at delivery: refused before a connection is made.
    with pytest.raises(httpx.ConnectError, match="non-public"):
        post(EgressPolicy(), f"http://localhost:{port}/hook")
    assert hits == []
    assert post(EgressPolicy.from_hosts(["localhost"]), f"http://localhost:{port}/hook").status_code == 204
    assert hits == ["/hook"]


def test_redirects_are_not_followed(receiver: tuple[str, list[str], type]) -> None:
    address, hits, handler = receiver
    handler.redirect_to = f"http://{address}/internal"
    response = post(EgressPolicy.from_hosts(["127.0.0.1"]), f"http://{address}/hook")
    assert response.status_code == 302
    assert hits == ["/hook"]
