"""The outbound ranges (dockyard/outbound.py) on their own: which addresses a webhook, the git proxy or a template
fetch may reach, how a name's addresses are judged, that a checked request goes to the address that was checked,
and that redirects are checked too. The real deliveries, clones and fetches: tests/webhooks/test_webhooks.py,
tests/gitauth/test_git_proxy.py, tests/templates/test_devcontainer_repo.py, tests/api/test_devcontainer_templates.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from dockyard.outbound import GuardedTransport, OutboundDenied, OutboundPolicy, resolve_checked


def test_this_host_and_link_local_are_always_denied_and_operators_add_ranges() -> None:
    default = OutboundPolicy()
    for address in ("169.254.169.254", "0.0.0.0", "::", "fe80::1%eth0", "fd00:ec2::254", "100.100.100.200"):
        assert default.refusal(address) is not None, address
    # An IPv4 address written as IPv6 is itself.
    assert default.refusal("::ffff:169.254.169.254") == (
        "::ffff:169.254.169.254 is in 169.254.0.0/16, a range this server does not connect to for its users"
    )
    for address in ("127.0.0.1", "::1", "10.1.2.3", "100.100.100.201", "140.82.112.3"):
        assert default.refusal(address) is None, address

    private = OutboundPolicy.with_denied(["127.0.0.0/8", " ::1 ", "10.0.0.0/8", ""])
    assert private.refusal("::ffff:127.0.0.1") is not None
    assert private.refusal("::1") is not None
    assert private.refusal("10.9.9.9") is not None
    assert private.refusal("169.254.169.254") is not None  # the defaults stay
    assert private.refusal("192.168.1.1") is None

    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an address range"):
        OutboundPolicy.with_denied(["10.0.0.0/33"])


def test_a_name_is_refused_when_any_of_its_addresses_is_denied() -> None:
    policy = OutboundPolicy.with_denied(["127.0.0.0/8"])
    assert policy.names_refusal("git.example", ["140.82.112.3", "2606:50c0::1"]) is None
    assert policy.names_refusal("twofaced.example", ["140.82.112.3", "127.0.0.1"]) == (
        "twofaced.example: 127.0.0.1 is in 127.0.0.0/8, a range this server does not connect to for its users"
    )
    assert policy.names_refusal("nowhere.example", []) == "nowhere.example has no address"
    # Literal addresses are judged when a URL is registered; names wait for their connection.
    assert policy.literal_refusal("[::ffff:127.0.0.2]") is not None
    assert policy.literal_refusal("localhost") is None


class _Recorder(httpx.BaseTransport):
    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(204)


def test_a_checked_request_goes_to_the_checked_address_under_its_own_name() -> None:
    # `localhost` resolves from /etc/hosts: no lookup leaves the machine, and the recorder sends nothing.
    recorder = _Recorder()
    with httpx.Client(transport=GuardedTransport(OutboundPolicy(), recorder)) as client:
        client.post("https://localhost:8443/hook?x=1", content=b"{}")
    [sent] = recorder.sent
    assert sent.url.host in ("127.0.0.1", "::1")
    assert (sent.url.port, sent.url.path, sent.url.query) == (8443, "/hook", b"x=1")
    assert sent.headers["host"] == "localhost:8443"
    assert sent.extensions["sni_hostname"] == "localhost"

    denied = _Recorder()
    with (
        httpx.Client(
            transport=GuardedTransport(OutboundPolicy.with_denied(["127.0.0.0/8", "::1"]), denied)
        ) as client,
        pytest.raises(OutboundDenied, match=r"^localhost: \S+ is in (127\.0\.0\.0/8|::1/128), "),
    ):
        client.post("http://localhost:3000/hook", content=b"{}")
    assert denied.sent == []


def test_each_checked_address_is_tried_until_one_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    # A name with an IPv6 and an IPv4 address on a host whose IPv6 route is down.
    infos = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::7", 443, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: infos)

    tried: list[str] = []

    class FirstFails(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            tried.append(request.url.host)
            if len(tried) == 1:
                raise httpx.ConnectError("unreachable", request=request)
            assert request.extensions["sni_hostname"] == "git.example"
            return httpx.Response(204)

    with httpx.Client(transport=GuardedTransport(OutboundPolicy(), FirstFails())) as client:
        assert client.get("https://git.example/app.git/info/refs").status_code == 204
    assert tried == ["2001:db8::7", "192.0.2.7"]


class _Origin:
    """An HTTP/1.1 server on a loopback address that answers each request with `answer(path)` and notes the
    connection (client port) each request came on."""

    def __init__(self, address: str, answer: Callable[[str], tuple[int, dict[str, str]]]) -> None:
        seen: list[tuple[int, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen.append((self.client_address[1], self.path))
                status, headers = answer(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_redirect_is_checked_like_the_first_request() -> None:
    # A registry's blob redirect (tests send nothing beyond loopback: 127.0.0.2 plays the denied service).
    hidden = _Origin("127.0.0.2", lambda path: (200, {}))
    public = _Origin(
        "127.0.0.1", lambda path: (307, {"Location": f"http://127.0.0.2:{hidden.port}/latest/meta-data"})
    )
    try:
        transport = GuardedTransport(OutboundPolicy.with_denied(["127.0.0.2/32"]))
        with (
            httpx.Client(transport=transport, follow_redirects=True) as client,
            pytest.raises(OutboundDenied, match=r"^127\.0\.0\.2 is in 127\.0\.0\.2/32, "),
        ):
            client.get(f"http://127.0.0.1:{public.port}/v2/blob")
        assert [path for _port, path in public.seen] == ["/v2/blob"]
        assert hidden.seen == []
    finally:
        public.close()
        hidden.close()


def test_each_name_has_connections_of_its_own() -> None:
    # Two names of one address (a CDN's): a connection made, and its TLS checked, for one name never carries the
    # other's requests, though both are sent to the same checked address.
    origin = _Origin("127.0.0.1", lambda path: (204, {}))
    try:
        with httpx.Client(transport=GuardedTransport(OutboundPolicy())) as client:
            for url in ("http://localhost:{}/a", "http://127.0.0.1:{}/b", "http://localhost:{}/c"):
                assert client.get(url.format(origin.port)).status_code == 204
        by_path = dict((path, port) for port, path in origin.seen)
        assert by_path["/a"] == by_path["/c"] != by_path["/b"]
    finally:
        origin.close()


def test_a_program_that_connects_by_itself_gets_the_checked_addresses() -> None:
    # What git is pinned to when it fetches a template's repository (templates/devcontainer_repo.py).
    assert "127.0.0.1" in resolve_checked(OutboundPolicy(), "localhost", 80)
    with pytest.raises(OutboundDenied, match=r"^localhost: 127\.0\.0\.1 is in 127\.0\.0\.0/8, "):
        resolve_checked(OutboundPolicy.with_denied(["127.0.0.0/8", "::1"]), "localhost", 80)
