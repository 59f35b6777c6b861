"""Ed25519 signatures of the audit folder: tamper evidence that rests on a key, not on a file.

``sibnet audit --sign KEY`` signs what the audit wrote (every file of ``results/audit/``:
``lineage.json``, ``lineage.md`` and whatever else the audit stage writes there) and writes the
signature **beside** the folder, as ``results/audit.sig.json`` — outside the audit stage's
output, so Snakemake and DVC still see that output as they wrote it. ``sibnet audit --verify
--public-key PUB`` checks it: any edit to any signed file, a file added to or removed from the
folder, an edited signature file, or a signature by another key is a finding.

What is signed (:func:`payload`): the canonical JSON (sorted keys, no spaces) of
``{"format": "sibnet-lineage-signature/1", "folder": <name>, "files": {<name>: <sha256>}}``.
The signature file holds that ``files`` map, the signature (base64), the SHA-256 fingerprint of
the public key and the time of signing — nothing secret.

Key handling (see the README, "Signing the audit"):

- ``KEY`` is an Ed25519 private key file, PEM (PKCS#8, ``openssl genpkey -algorithm ed25519``)
  or OpenSSH (``ssh-keygen -t ed25519``). If it is encrypted, the passphrase is read from the
  environment variable ``SIBNET_SIGNING_KEY_PASSPHRASE`` (never from the command line, where
  other users of the machine can see it).
- The key is only read: it is never copied, logged, written to an output or sent to MLflow
  (signing starts no MLflow run). A key file inside the audited folder is refused, and one
  readable by other users draws a warning.
- ``PUB`` is the matching public key, PEM (``openssl pkey -pubout``) or an OpenSSH
  ``ssh-ed25519 …`` line; hand it to reviewers through a channel other than the results.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from sibnet.errors import SibnetError
from sibnet.files import sha256_bytes, write_json
from sibnet.lineage import digest, now

__all__ = [
    "PASSPHRASE_ENV",
    "SIGNATURE_FORMAT",
    "SigningError",
    "payload",
    "sign",
    "signature_path",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_FORMAT = "sibnet-lineage-signature/1"
PASSPHRASE_ENV = "SIBNET_SIGNING_KEY_PASSPHRASE"
ALGORITHM = "Ed25519"


class SigningError(ValueError, SibnetError):
    """A key cannot be used, or the audit folder cannot be signed; the message says why."""


def signature_path(lineage: Path) -> Path:
    """Where the signature of the audit folder ``lineage`` lies: ``<lineage>.sig.json``."""
    lineage = Path(lineage)
    return lineage.parent / f"{lineage.name}.sig.json"


def folder_hashes(lineage: Path) -> dict[str, str]:
    """Name (relative to ``lineage``, POSIX) → SHA-256 of every file of the audit folder."""
    lineage = Path(lineage)
    if not lineage.is_dir():
        raise SigningError(f"{lineage}: no audit folder here; run `sibnet audit` first")
    return dict(digest(lineage)["files"])


def payload(folder: str, files: dict[str, str]) -> bytes:
    """The bytes that are signed: canonical JSON of the format, folder name and file hashes."""
    document = {"format": SIGNATURE_FORMAT, "folder": folder, "files": files}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: Any) -> str:
    """``SHA256:<hex>`` of the raw 32-byte Ed25519 public key."""
    return f"SHA256:{sha256_bytes(_raw_public(public_key))}"


def load_private_key(path: Path) -> Any:
    """The Ed25519 private key in ``path`` (PEM PKCS#8 or OpenSSH; encrypted: passphrase from
    :data:`PASSPHRASE_ENV`). Errors never quote the file's contents."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    if not path.is_file():
        raise SigningError(f"signing key {path}: not found")
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("signing key %s is readable by other users: chmod 600 %s", path, path)
    data = path.read_bytes()
    passphrase = os.environ.get(PASSPHRASE_ENV)
    secret = passphrase.encode() if passphrase else None
    loader = (
        serialization.load_ssh_private_key
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        else serialization.load_pem_private_key
    )
    try:
        key = loader(data, password=secret)
    except TypeError as error:  # encrypted without a passphrase, or a passphrase not needed
        raise SigningError(
            f"signing key {path}: {error}; an encrypted key's passphrase is read from "
            f"{PASSPHRASE_ENV}"
        ) from None
    except ValueError:
        raise SigningError(
            f"signing key {path}: not a readable private key (a wrong passphrase in "
            f"{PASSPHRASE_ENV}, or not PEM PKCS#8 / OpenSSH); expected an Ed25519 key, e.g. "
            "from `openssl genpkey -algorithm ed25519 -out KEY`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(
            f"signing key {path}: a {type(key).__name__.removeprefix('_')}, expected Ed25519"
        )
    return key


def load_public_key(path: Path) -> Any:
    """The Ed25519 public key in ``path``: PEM (SubjectPublicKeyInfo) or an OpenSSH line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    if not path.is_file():
        raise SigningError(f"public key {path}: not found")
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        raise SigningError(
            f"public key {path}: this is a private key; give the public one (reviewers never "
            "need the private key)"
        )
    try:
        key = (
            serialization.load_ssh_public_key(data.strip())
            if data.lstrip().startswith(b"ssh-")
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError):
        raise SigningError(
            f"public key {path}: not a PEM or OpenSSH public key; expected Ed25519, e.g. from "
            "`openssl pkey -in KEY -pubout -out PUB`"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"public key {path}: not an Ed25519 key")
    return key


def sign(lineage: Path, key_path: Path) -> Path:
    """Sign every file of the audit folder ``lineage`` with the Ed25519 key in ``key_path``;
    write :func:`signature_path` (atomically) and return it."""
    lineage = Path(lineage)
    if Path(key_path).resolve().is_relative_to(lineage.resolve()):
        raise SigningError(
            f"signing key {key_path} lies inside the audit folder {lineage}: it would be "
            "published with the results; keep it outside the repository"
        )
    key = load_private_key(key_path)
    files = folder_hashes(lineage)
    if not files:
        raise SigningError(f"{lineage}: the audit folder is empty; run `sibnet audit` first")
    signature = key.sign(payload(lineage.name, files))
    document = {
        "format": SIGNATURE_FORMAT,
        "algorithm": ALGORITHM,
        "folder": lineage.name,
        "files": files,
        "public_key": fingerprint(key.public_key()),
        "signed": now(),
        "signature": base64.standard_b64encode(signature).decode(),
    }
    path = signature_path(lineage)
    write_json(path, document)
    log.info(
        "signed %d file(s) of %s with key %s → %s",
        len(files),
        lineage,
        document["public_key"],
        path,
    )
    return path


def verify_signature(lineage: Path, public_key_path: Path) -> list[str]:
    """Check the signature of the audit folder ``lineage`` with the public key in
    ``public_key_path``; one line per finding (empty: the folder is as signed, by that key)."""
    from cryptography.exceptions import InvalidSignature

    lineage = Path(lineage)
    key = load_public_key(public_key_path)
    path = signature_path(lineage)
    if not path.is_file():
        return [f"unsigned: {path} not found (sign with `sibnet audit --sign KEY`)"]
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        signed_files = dict(document["files"])
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as error:
        return [f"signature: {path} is not a readable signature file ({error})"]
    if document.get("format") != SIGNATURE_FORMAT or document.get("algorithm") != ALGORITHM:
        return [
            f"signature: {path}: format {document.get('format')!r}, expected {SIGNATURE_FORMAT}"
        ]
    if document.get("public_key") != fingerprint(key):
        return [
            f"signature: {path} was made with key {document.get('public_key')}, not with "
            f"{public_key_path} ({fingerprint(key)})"
        ]
    try:
        key.verify(signature, payload(str(document.get("folder")), signed_files))
    except InvalidSignature:
        return [f"signature: {path} does not verify: the signature file was edited"]
    problems = []
    current = folder_hashes(lineage)
    for name in sorted(set(signed_files) | set(current)):
        if name not in current:
            problems.append(f"signature: {lineage / name} was signed and is gone")
        elif name not in signed_files:
            problems.append(f"signature: {lineage / name} was added after signing")
        elif current[name] != signed_files[name]:
            problems.append(f"signature: {lineage / name} changed after signing")
    if document.get("folder") != lineage.name:
        problems.append(
            f"signature: {path} signs folder {document.get('folder')!r}, not {lineage.name!r}"
        )
    return problems
