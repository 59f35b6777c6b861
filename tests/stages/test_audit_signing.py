"""``sibnet audit --sign KEY`` and ``--verify --public-key PUB`` (:mod:`sibnet.signing`) on the
synthetic pipeline tree of ``test_audit``, with real Ed25519 keys from ``cryptography``."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sibnet.cli import main
from sibnet.config import Params
from sibnet.signing import (
    PASSPHRASE_ENV,
    SigningError,
    sign,
    signature_path,
    verify_signature,
)
from tests.stages.test_audit import _audit, tree  # noqa: F401  (the fixture)

AUDIT = Path("results/audit")


def _keys(
    where: Path, name: str = "key", ssh: bool = False, passphrase: bytes | None = None
) -> tuple[Path, Path, ed25519.Ed25519PrivateKey]:
    """A new Ed25519 key pair written to ``where`` (PEM, or OpenSSH with ``ssh``)."""
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    if ssh:
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    else:
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    where.mkdir(parents=True, exist_ok=True)
    (where / name).write_bytes(private)
    (where / name).chmod(0o600)
    (where / f"{name}.pub").write_bytes(public)
    return where / name, where / f"{name}.pub", key


@pytest.fixture
def signed(tree: Params, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # noqa: F811
    """The audited tree, signed; the key pair lies outside the working directory."""
    _audit(tree)
    private, public, _ = _keys(tmp_path_factory.mktemp("keys"))
    assert main(["audit", "--sign", str(private)]) == 0
    return private, public


def test_sign_then_verify(signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, public = signed
    document = json.loads(signature_path(AUDIT).read_text())
    assert signature_path(AUDIT) == Path("results/audit.sig.json")  # outside the DAG's output
    assert set(document["files"]) == {"lineage.json", "lineage.md"} | {
        p.name for p in AUDIT.iterdir()
    }
    assert document["algorithm"] == "Ed25519" and document["public_key"].startswith("SHA256:")
    capsys.readouterr()
    assert main(["audit", "--verify", "--public-key", str(public)]) == 0
    assert f"the audit folder is as signed by {public}" in capsys.readouterr().out
    assert main(["audit", "--verify"]) == 0  # without the key: a note, not a finding
    assert "results/audit.sig.json not checked: give --public-key PUB" in capsys.readouterr().out


def test_the_signature_fails_after_any_one_byte_change(signed: tuple[Path, Path]) -> None:
    """Every byte position of every signed file, changed one at a time (a sample of positions
    of the big lineage.json: first, last and 40 spread between), and every byte of the
    signature value."""
    _, public = signed
    for file in sorted(AUDIT.iterdir()):
        original = file.read_bytes()
        size = len(original)
        positions = sorted({0, size - 1, *range(0, size, max(1, size // 40))})
        for position in positions:
            changed = bytearray(original)
            changed[position] ^= 0x01
            file.write_bytes(bytes(changed))
            problems = verify_signature(AUDIT, public)
            assert problems == [f"signature: {file} changed after signing"], (file, position)
        file.write_bytes(original + b"\n")  # one byte appended
        assert verify_signature(AUDIT, public) == [f"signature: {file} changed after signing"]
        file.write_bytes(original)
    assert verify_signature(AUDIT, public) == []

    path = signature_path(AUDIT)
    original = path.read_text()
    document = json.loads(original)
    raw = bytearray(base64.standard_b64decode(document["signature"]))
    for position in range(len(raw)):
        edited = bytearray(raw)
        edited[position] ^= 0x80
        document["signature"] = base64.standard_b64encode(bytes(edited)).decode()
        path.write_text(json.dumps(document))
        assert verify_signature(AUDIT, public) == [
            f"signature: {path} does not verify: the signature file was edited"
        ]
    path.write_text(original)
    assert verify_signature(AUDIT, public) == []


def test_the_consistent_edit_of_everything_local_is_caught_by_the_signature(
    signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A result edited together with its hash in lineage.json, in its job's record and in the
    signature's own file list: the unsigned checks see nothing (tracking off: no MLflow copy),
    the signature does."""
    _, public = signed
    target = Path("results/toy/sibnet/seed0/saliency.json")
    content = target.read_bytes() + b" "
    target.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    lineage = AUDIT / "lineage.json"
    document = json.loads(lineage.read_text())
    for artifact in document["artifacts"]:
        if artifact["path"] == target.as_posix():
            artifact.update(sha256=sha, bytes=len(content))
    record = Path(".sibnet/lineage/saliency/toy/sibnet/seed0.json")
    entry = json.loads(record.read_text())
    for job in [entry, *document["jobs"]]:
        for output in job["outputs"].values():
            if output["path"] == target.as_posix():
                output.update(sha256=sha, bytes=len(content))
    lineage.write_text(json.dumps(document))
    record.write_text(json.dumps(entry))
    assert main(["audit", "--verify"]) == 0  # every editable copy agrees
    signature = signature_path(AUDIT)
    signed_doc = json.loads(signature.read_text())
    signed_doc["files"]["lineage.json"] = hashlib.sha256(lineage.read_bytes()).hexdigest()
    signature.write_text(json.dumps(signed_doc))
    capsys.readouterr()
    assert main(["audit", "--verify", "--public-key", str(public)]) == 1
    out = capsys.readouterr().out
    assert "signature: results/audit.sig.json does not verify: the signature file was edited" in out
    assert "1 finding(s)" in out


def test_added_removed_and_other_keys(
    signed: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    _, public = signed
    (AUDIT / "extra.txt").write_text("added")
    assert verify_signature(AUDIT, public) == [
        f"signature: {AUDIT / 'extra.txt'} was added after signing"
    ]
    (AUDIT / "extra.txt").unlink()
    md = (AUDIT / "lineage.md").read_bytes()
    (AUDIT / "lineage.md").unlink()
    assert verify_signature(AUDIT, public) == [
        f"signature: {AUDIT / 'lineage.md'} was signed and is gone"
    ]
    (AUDIT / "lineage.md").write_bytes(md)
    _, other, _ = _keys(tmp_path_factory.mktemp("other"))
    (problem,) = verify_signature(AUDIT, other)
    assert "was made with key SHA256:" in problem and f"not with {other}" in problem
    signature_path(AUDIT).unlink()
    assert verify_signature(AUDIT, public) == [
        "unsigned: results/audit.sig.json not found (sign with `sibnet audit --sign KEY`)"
    ]


def test_openssh_and_encrypted_keys(
    tree: Params,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _audit(tree)
    keys = tmp_path_factory.mktemp("keys")
    private, public, _ = _keys(keys, "ssh", ssh=True)
    assert public.read_bytes().startswith(b"ssh-ed25519 ")
    sign(AUDIT, private)
    assert verify_signature(AUDIT, public) == []

    private, public, _ = _keys(keys, "locked", passphrase=b"correct horse")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with pytest.raises(SigningError, match=PASSPHRASE_ENV):
        sign(AUDIT, private)
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(SigningError, match="wrong passphrase"):
        sign(AUDIT, private)
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    sign(AUDIT, private)
    assert verify_signature(AUDIT, public) == []


def test_bad_keys_and_bad_use_are_refused(
    tree: Params,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _audit(tree)
    keys = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "rsa").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningError, match="expected Ed25519"):
        sign(AUDIT, keys / "rsa")
    private, public, _ = _keys(keys)
    with pytest.raises(SigningError, match="this is a private key"):
        verify_signature(AUDIT, private)
    (keys / "junk").write_text("not a key")
    with pytest.raises(SigningError, match="not a readable private key"):
        sign(AUDIT, keys / "junk")
    with pytest.raises(SigningError, match="not found"):
        sign(AUDIT, keys / "absent")
    inside = AUDIT / "key"
    inside.write_bytes(private.read_bytes())
    with pytest.raises(SigningError, match="inside the audit folder"):
        sign(AUDIT, inside)
    inside.unlink()
    assert not signature_path(AUDIT).exists()  # nothing written by a refused signing

    capsys.readouterr()
    assert main(["audit", "--public-key", str(public)]) == 2
    assert "--public-key goes with --verify" in capsys.readouterr().err
    assert main(["audit", "--verify", "--sign", str(private)]) == 2
    assert main(["audit", "--sign", str(private), "--lineage", "nowhere"]) == 2
    assert "no audit folder here" in capsys.readouterr().err


def test_the_key_is_never_written_or_logged(
    tree: Params,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the key file's text, nor its PEM body, nor the raw 32-byte private key (bytes,
    hex, base64) appears in any file of the working tree or in what was printed or logged."""
    _audit(tree)
    private, public, key = _keys(tmp_path_factory.mktemp("keys"))
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    body = b"".join(private.read_bytes().splitlines()[1:-1])
    needles = [raw, raw.hex().encode(), base64.standard_b64encode(raw), body]
    with caplog.at_level(logging.DEBUG):
        assert main(["audit", "--sign", str(private)]) == 0
        assert main(["audit", "--verify", "--public-key", str(public)]) == 0
    found = [
        path
        for path in Path.cwd().rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]
    assert found == []
    printed = capfd.readouterr()
    text = printed.out + printed.err + caplog.text
    assert not any(needle.decode("latin-1") in text for needle in needles)
    assert "signed results/audit" in printed.out
