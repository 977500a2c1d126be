"""App URLs and app-host credentials, without a server."""

from __future__ import annotations

import time

import pytest

from dockyard.apps import tickets
from dockyard.apps.routing import Wildcard, parse_path, path_url
from dockyard.errors import BadRequest


def test_path_urls() -> None:
    target = parse_path("/@alice/dev/apps/code/static/x.js")
    assert target is not None
    assert (target.owner, target.workspace, target.slug, target.port) == ("alice", "dev", "code", None)
    assert (target.prefix, target.rest) == ("/@alice/dev/apps/code", "/static/x.js")
    bare = parse_path("/@alice/dev/ports/8080")
    assert bare is not None
    assert bare.port == 8080
    assert bare.rest == ""
    assert parse_path("/@alice/dev") is None
    assert parse_path("/api/v2/workspaces") is None
    with pytest.raises(BadRequest) as info:
        parse_path("/@alice/dev/ports/0/")
    assert info.value.message == "Port '0' is not a port number."
    assert path_url("http://h:1/", "alice", "dev", slug="code") == "http://h:1/@alice/dev/apps/code/"
    assert path_url("http://h:1", "alice", "dev", port=3000) == "http://h:1/@alice/dev/ports/3000/"


def test_wildcard_hosts() -> None:
    wildcard = Wildcard.parse("http://*.apps.example:8080")
    target = wildcard.match("code--dev--alice.apps.example:8080")
    assert target is not None
    assert target.subdomain
    assert (target.owner, target.workspace, target.slug) == ("alice", "dev", "code")
    port = wildcard.match("3000--my-ws--bob.APPS.example")
    assert port is not None
    assert port.port == 3000
    assert port.workspace == "my-ws"
    assert wildcard.match("apps.example") is None
    assert wildcard.match("code.apps.example") is None
    assert wildcard.match("code--dev--alice.apps.example.evil.com") is None
    assert wildcard.origin("code", "dev", "alice") == "http://code--dev--alice.apps.example:8080"
    assert Wildcard.parse("*.apps.example").origin("a", "b", "c") == "http://a--b--c.apps.example"
    for bad in ("apps.example", "*apps.example", "*.a.*.b", "ftp://*.a.b", "*.a.b:port"):
        with pytest.raises(ValueError, match=r"wildcard host|scheme"):
            Wildcard.parse(bad)


def test_tickets_are_bound_to_purpose_host_and_time() -> None:
    key = b"k" * 32
    ticket = tickets.sign(key, purpose="ticket", host="a--b--c.apps.example", token_id="tok", seconds=60)
    payload = tickets.verify(key, ticket, purpose="ticket", host="A--b--c.apps.example")
    assert payload is not None
    assert payload["t"] == "tok"
    assert tickets.verify(key, ticket, purpose="cookie", host="a--b--c.apps.example") is None
    assert tickets.verify(key, ticket, purpose="ticket", host="x--b--c.apps.example") is None
    assert tickets.verify(b"o" * 32, ticket, purpose="ticket", host="a--b--c.apps.example") is None
    assert tickets.verify(key, ticket[:-2] + "AA", purpose="ticket", host="a--b--c.apps.example") is None
    expired = tickets.sign(key, purpose="ticket", host="h", token_id="tok", seconds=-1)
    assert tickets.verify(key, expired, purpose="ticket", host="h") is None
    used = tickets.UsedTickets()
    assert used.first_use("n1", time.time() + 60)
    assert not used.first_use("n1", time.time() + 60)
