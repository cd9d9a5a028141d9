"""Signed policy weights: ed25519 signatures inside the safetensors payload, so that one format
serves both the PolicyWeights topic and a weights file.

A signature covers a canonical digest of the whole payload content: every metadata entry but
the signature itself (version, action_limit, updates, architecture, cnn_norm, key_id, ...) and
every tensor's name, dtype, shape and bytes. It lives in the payload's `__metadata__`:

    key_id            short fingerprint of the signer's public key (a lookup hint only: the
                      signature is checked against the trusted key itself)
    signature_scheme  SIGNATURE_SCHEME, so that a later scheme is a new name, never a silent reinterpretation
    signature         base64 of the 64-byte ed25519 signature of the digest

Keys are files (PEM: PKCS#8 private keys written 0600, SubjectPublicKeyInfo public keys; the
same formats `openssl genpkey -algorithm ed25519` writes). No key, private or public, ever goes
into a message or a log line; errors name the file, never its content.

The header parser here is strict where the safetensors library is strict (tensors packed back to
back, covering the buffer exactly, sizes matching dtype x shape) and stricter where a lenient
reading could let the signed content differ from the loaded one (a duplicate JSON key is
refused), so the digest covers exactly the tensors `safetensors.torch.load` returns.
No torch and no ROS here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from av_td3_ros.atomic_file import write_atomic

__all__ = [
    "SIGNATURE_KEYS",
    "SIGNATURE_SCHEME",
    "KeyFileError",
    "SafetensorsHeader",
    "SignatureRejected",
    "SigningKey",
    "generate_key_pair",
    "is_signed",
    "key_id_of",
    "load_public_key",
    "load_signing_key",
    "load_trusted_keys",
    "payload_digest",
    "read_header",
    "sign_payload",
    "verify_payload",
    "with_metadata",
]

SIGNATURE_SCHEME = "ed25519-sha256-av_td3-v1"
SIGNATURE_KEYS = ("key_id", "signature_scheme", "signature")
_DOMAIN = b"av_td3_ros policy weights signature v1\x00"
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
_NOT_SAFETENSORS = "not a safetensors payload"
KEY_ID_HEX = 16  # 64 bits of sha256(public key): short enough to read, long enough not to collide by chance

# safetensors dtype -> bytes per element
_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


class SignatureRejected(ValueError):
    """A payload whose signature does not prove it came, unchanged, from a trusted key."""


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and why (never its content)."""


# ----------------------------------------------------------------------------------------------
# The payload
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated safetensors header: metadata, tensor entries, and where the data starts."""

    metadata: dict[str, str]
    tensors: dict[str, dict]  # name -> {"dtype", "shape", "data_offsets"}
    data_start: int


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_header(payload: bytes | bytearray | memoryview) -> SafetensorsHeader:
    """Parse and validate a safetensors header (no tensor is read). Raises SignatureRejected."""
    view = memoryview(payload).cast("B")
    if len(view) < 8:
        raise SignatureRejected(f"not a safetensors payload: {len(view)} bytes is too short for a header")
    (header_len,) = struct.unpack("<Q", view[:8])
    if header_len > min(MAX_HEADER_BYTES, len(view) - 8):
        raise SignatureRejected(f"not a safetensors payload: header length {header_len} exceeds the payload")
    try:
        header = json.loads(bytes(view[8 : 8 + header_len]), object_pairs_hook=_no_duplicate_keys)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignatureRejected(f"not a safetensors payload: bad header ({exc})") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise SignatureRejected("not a safetensors payload: __metadata__ must map strings to strings")
    data_start = 8 + header_len
    data_len = len(view) - data_start
    spans = []
    for name, entry in header.items():
        if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}):
            raise SignatureRejected(f"{_NOT_SAFETENSORS}: tensor {name!r} is not a dtype/shape/offsets entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPE_SIZES:
            raise SignatureRejected(f"{_NOT_SAFETENSORS}: tensor {name!r} has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise SignatureRejected(f"{_NOT_SAFETENSORS}: tensor {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise SignatureRejected(f"{_NOT_SAFETENSORS}: tensor {name!r} has bad data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len or end - begin != math.prod(shape) * _DTYPE_SIZES[dtype]:
            raise SignatureRejected(
                f"{_NOT_SAFETENSORS}: tensor {name!r} data_offsets {offsets} do not fit "
                f"{dtype}{shape} in a {data_len}-byte buffer"
            )
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SignatureRejected(f"{_NOT_SAFETENSORS}: tensor {name!r} overlaps or leaves a gap")
        position = end
    if position != data_len:
        raise SignatureRejected(f"{_NOT_SAFETENSORS}: {data_len - position} bytes after the last tensor")
    return SafetensorsHeader(metadata, header, data_start)


def payload_digest(payload: bytes | bytearray | memoryview, header: SafetensorsHeader | None = None) -> bytes:
    """sha256 over the canonical content: every metadata entry except `signature`, then each tensor
    (sorted by name) as name, dtype, shape and bytes, every field length-prefixed (unambiguous)."""
    header = read_header(payload) if header is None else header
    view = memoryview(payload).cast("B")
    digest = hashlib.sha256(_DOMAIN)
    # The small fields are gathered and hashed with the next tensor's length prefix in one update:
    # the same bytes in the same order (the same digest), but two updates per tensor instead of
    # eight, and each update is a point where this thread must win the GIL back from inference.
    pending = bytearray()

    def field(data: bytes | memoryview) -> None:
        pending.extend(struct.pack("<Q", len(data)))
        if len(data) <= 4096:
            pending.extend(data)
            return
        digest.update(pending)
        pending.clear()
        digest.update(data)  # the tensor bytes: hashlib releases the GIL meanwhile

    signed = {k: v for k, v in header.metadata.items() if k != "signature"}
    field(json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())
    field(struct.pack("<Q", len(header.tensors)))
    for name in sorted(header.tensors):
        entry = header.tensors[name]
        begin, end = entry["data_offsets"]
        field(name.encode())
        field(entry["dtype"].encode())
        field(json.dumps(entry["shape"]).encode())
        field(view[header.data_start + begin : header.data_start + end])
    digest.update(pending)
    return digest.digest()


def _with_metadata(payload, header: SafetensorsHeader, metadata: Mapping[str, str]) -> bytes:
    """The same tensors and bytes under a new __metadata__ (the header padded to 8 bytes)."""
    new = {"__metadata__": dict(metadata), **header.tensors}
    text = json.dumps(new, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    # One copy of the tensor bytes (a concatenation of bytes() would make two).
    return b"".join((struct.pack("<Q", len(text)), text, memoryview(payload).cast("B")[header.data_start :]))


def with_metadata(payload: bytes | bytearray | memoryview, entries: Mapping[str, str]) -> bytes:
    """The payload with `entries` set in its metadata, tensors unchanged. Any signature is dropped:
    it would no longer match (sign the result again)."""
    header = read_header(payload)
    metadata = {k: v for k, v in header.metadata.items() if k not in SIGNATURE_KEYS}
    metadata.update({str(k): str(v) for k, v in entries.items()})
    return _with_metadata(payload, header, metadata)


def is_signed(payload) -> bool:
    return "signature" in read_header(payload).metadata


# ----------------------------------------------------------------------------------------------
# Keys
# ----------------------------------------------------------------------------------------------


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX]


class SigningKey:
    """An ed25519 private key and its key id. repr() never shows the key."""

    def __init__(self, private_key: Ed25519PrivateKey, source: str = "generated"):
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        self.source = source

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, source={self.source!r})"

    def sign_digest(self, digest: bytes) -> bytes:
        return self._private_key.sign(digest)

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key_pair(private_path: str | os.PathLike, public_path: str | os.PathLike | None = None,
                      overwrite: bool = False) -> SigningKey:
    """A new key pair: the private key to `private_path` (0600, atomically), the public key to
    `public_path` (default: `<private_path>.pub`, 0644). Refuses to replace an existing private
    key unless `overwrite` (a lost signing key means re-keying every car)."""
    private_path = Path(private_path)
    if public_path is None:
        public_path = private_path.with_name(private_path.name + ".pub")
    public_path = Path(public_path)
    if private_path.exists() and not overwrite:
        raise KeyFileError(f"{private_path} exists; refusing to replace a signing key (pass overwrite)")
    key = SigningKey(Ed25519PrivateKey.generate(), str(private_path))
    pem = key._private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # write_atomic's temporary file is created 0600 (mkstemp), so the key is never readable by others,
    # not even for an instant; the chmod only states it.
    write_atomic(private_path, pem)
    os.chmod(private_path, 0o600)
    write_atomic(public_path, key.public_pem())
    os.chmod(public_path, 0o644)
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def load_signing_key(path: str | os.PathLike) -> SigningKey:
    """A PEM ed25519 private key. Refused when group or others may read it (as ssh does)."""
    path = Path(path)
    data = _read_key_file(path)
    if b"PUBLIC KEY" in data:
        raise KeyFileError(f"{path} is a public key; signing needs the private key file")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyFileError(f"signing key {path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is a {type(key).__name__}, not an ed25519 key")
    return SigningKey(key, str(path))


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    """A PEM ed25519 public key. A private key file is refused: cars must never hold one."""
    path = Path(path)
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is a private key; trust the public key file (.pub) instead")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key ({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is a {type(key).__name__}, not an ed25519 key")
    return key


def load_trusted_keys(paths: Iterable[str | os.PathLike]) -> dict[str, Ed25519PublicKey]:
    """key id -> public key for every file in `paths`."""
    keys = {}
    for path in paths:
        key = load_public_key(path)
        keys[key_id_of(key)] = key
    return keys


# ----------------------------------------------------------------------------------------------
# Sign and verify
# ----------------------------------------------------------------------------------------------


def sign_payload(payload: bytes | bytearray | memoryview, key: SigningKey) -> bytes:
    """The payload with `key_id`, `signature_scheme` and `signature` set in its metadata (an
    existing signature is replaced). Tensor bytes are copied unchanged."""
    header = read_header(payload)
    metadata = {k: v for k, v in header.metadata.items() if k not in SIGNATURE_KEYS}
    metadata["key_id"] = key.key_id
    metadata["signature_scheme"] = SIGNATURE_SCHEME
    unsigned = SafetensorsHeader(metadata, header.tensors, header.data_start)
    signature = key.sign_digest(payload_digest(payload, unsigned))
    metadata["signature"] = base64.b64encode(signature).decode("ascii")
    return _with_metadata(payload, header, metadata)


def verify_payload(payload: bytes | bytearray | memoryview,
                   trusted_keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The key id of the trusted key that signed `payload`, or SignatureRejected saying why:
    unsigned, an unknown scheme, an unknown key, a malformed signature, or content changed after
    signing (metadata or tensors)."""
    header = read_header(payload)
    meta = header.metadata
    if "signature" not in meta:
        raise SignatureRejected("unsigned payload: its metadata carries no signature")
    scheme = meta.get("signature_scheme", "")
    if scheme != SIGNATURE_SCHEME:
        raise SignatureRejected(f"unknown signature scheme {scheme!r} (expected {SIGNATURE_SCHEME!r})")
    key_id = meta.get("key_id", "")
    public_key = trusted_keys.get(key_id)
    if public_key is None:
        trusted = ", ".join(sorted(trusted_keys)) or "none"
        raise SignatureRejected(f"signed by unknown key {key_id!r} (trusted: {trusted})")
    try:
        signature = base64.b64decode(meta["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRejected("malformed signature: not base64") from None
    if len(signature) != 64:
        raise SignatureRejected(f"malformed signature: {len(signature)} bytes, an ed25519 signature has 64")
    try:
        public_key.verify(signature, payload_digest(payload, header))
    except InvalidSignature:
        raise SignatureRejected(
            f"bad signature for key {key_id!r}: the metadata or the tensors were changed after signing"
        ) from None
    return key_id
