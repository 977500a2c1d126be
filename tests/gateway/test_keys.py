"""Parsing public keys: what is accepted, what is refused and why, and fingerprints as ssh-keygen prints them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dockyard.errors import ValidationFailed
from dockyard.gateway import keys
from tests.gateway.conftest import make_key


@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("ecdsa", None), ("rsa", 2048)])
def test_accepted_keys_and_their_fingerprints(tmp_path: Path, kind: str, bits: int | None) -> None:
    files = make_key(tmp_path, f"id_{kind}", kind, bits)
    text = files.public_text
    key = keys.parse_public_key(text)
    algorithm, blob, _comment = text.split(" ", 2)
    assert keys.openssh_line(key) == f"{algorithm} {blob}"
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(files.public)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[1]
    assert keys.fingerprint(key) == printed


def _refusal(text: str) -> str:
    with pytest.raises(ValidationFailed) as info:
        keys.parse_public_key(text)
    [validation] = info.value.validations
    assert validation.field == "public_key"
    return validation.detail


def test_refused_keys_say_why(tmp_path: Path) -> None:
    ed = make_key(tmp_path, "ed")
    weak = make_key(tmp_path, "weak", "rsa", 1024)
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ed.private), "-I", "x", "-n", "a", str(ed.public)], check=True
    )
    certificate = (tmp_path / "ed-cert.pub").read_text()
    assert "private key" in _refusal(ed.private.read_text())
    assert "certificate" in _refusal(certificate)
    assert "at least 2048 bits; this one has 1024" in _refusal(weak.public_text)
    assert "exactly one public key line" in _refusal(ed.public_text + "\n" + weak.public_text)
    assert "<algorithm> <base64 key>" in _refusal("ssh-ed25519")
    assert "not a valid OpenSSH public key" in _refusal("ssh-ed25519 AAAAnot-base64!!")
    assert "DSA keys are not supported" in _refusal("ssh-dss AAAAB3NzaC1kc3MAAACBAP")
    # The first word must match the algorithm inside the key blob.
    blob = ed.public_text.split()[1]
    assert "algorithm mismatch" in _refusal(f"ssh-rsa {blob}")
    assert "not a valid OpenSSH public key" in _refusal(f'from="10.0.0.1" {ed.public_text}')
