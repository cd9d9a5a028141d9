"""Authenticated release of a latched stop (issue 15): a signed, single-use token bound to one
node, one stop and a short time window. No ROS here.

A CommandGate latches a stop (e-stop, lost heartbeat) and numbers it (`CommandGate.stop_id`, one
more for every new stop). Only a release token passes `ReleaseVerifier.check` before the gate's
own release rules (e-stop input false, heartbeat alive) are even asked. The token is the text of a
std_msgs/String (JSON, at most MAX_TOKEN_BYTES):

    {"scheme": "ed25519-av_td3-stop-release-v1", "node": "/ns/policy_node",
     "session": "<16 hex digits>", "stop_id": 7, "issued_at": 1733160000.25,
     "nonce": "<32 hex digits>", "key_id": "<16 hex digits>",
     "signature": "<base64 of the 64-byte ed25519 signature>"}

The signature covers a domain string and the canonical JSON of every field but `signature`. What
each field stops:
- `node` (the node's fully qualified name): a release signed for one car used on another;
- `session` (random, new for every run of the node): a release signed before a restart, whose
  stop numbers start again at 1;
- `stop_id`: a release signed for an earlier stop replayed against a newer one (a real stop that
  comes after the operator signed always wins);
- `issued_at` (wall-clock seconds, within `max_age` before and `max_future` after the node's clock):
  a captured token held back and used much later for the same stop;
- `nonce`: the same token used twice. Every token whose signature checks out is spent when it is
  checked, even if the gate then refuses the release (e-stop still pressed): release again with a
  new token.
The keys are the node's `release_keys` (operators' public keys), a set of their own: see
docs/safety.md for why they are not the weights' `trusted_keys`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from av_td3_ros.learning.signing import SigningKey

__all__ = ["MAX_TOKEN_BYTES", "RELEASE_SCHEME", "ReleaseRefused", "ReleaseToken", "ReleaseVerifier",
           "claimed_nonce", "sign_release"]

RELEASE_SCHEME = "ed25519-av_td3-stop-release-v1"
_DOMAIN = b"av_td3_ros stop release v1\x00"
MAX_TOKEN_BYTES = 4096
_FIELDS = {"scheme": str, "node": str, "session": str, "stop_id": int, "issued_at": float, "nonce": str,
           "key_id": str}
_REMEMBERED_NONCES = 10_000  # spent nonces kept while their tokens could still be fresh


class ReleaseRefused(ValueError):
    """A release token that must not release the stop; str(exc) is the reason."""


@dataclass(frozen=True)
class ReleaseToken:
    node: str
    session: str
    stop_id: int
    issued_at: float
    nonce: str
    key_id: str


def _signed_bytes(fields: Mapping) -> bytes:
    canonical = {k: fields[k] for k in _FIELDS}
    return _DOMAIN + json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_release(key: SigningKey, node: str, session: str, stop_id: int, issued_at: float | None = None,
                 nonce: str | None = None) -> str:
    """The release token (JSON text) for stop `stop_id` of run `session` of node `node`, signed
    with `key`."""
    fields = {
        "scheme": RELEASE_SCHEME,
        "node": str(node),
        "session": str(session),
        "stop_id": int(stop_id),
        "issued_at": float(time.time() if issued_at is None else issued_at),
        "nonce": secrets.token_hex(16) if nonce is None else str(nonce),
        "key_id": key.key_id,
    }
    fields["signature"] = base64.b64encode(key.sign_digest(_signed_bytes(fields))).decode("ascii")
    return json.dumps(fields, sort_keys=True)


def claimed_nonce(text: str) -> str:
    """The nonce a token claims (unverified), so that an answer can name the request; "" if none."""
    if len(text) > MAX_TOKEN_BYTES:
        return ""
    try:
        nonce = json.loads(text).get("nonce", "")
    except (ValueError, AttributeError):
        return ""
    return nonce[:64] if isinstance(nonce, str) else ""


def _parse(text: str) -> dict:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TOKEN_BYTES:
        raise ReleaseRefused(f"release token of {size} bytes exceeds {MAX_TOKEN_BYTES}")
    try:
        fields = json.loads(text)
    except ValueError:
        raise ReleaseRefused("unsigned release: not a signed release token (not JSON)") from None
    if not isinstance(fields, dict) or "signature" not in fields:
        raise ReleaseRefused("unsigned release: the token carries no signature")
    if set(fields) != {*_FIELDS, "signature"}:
        raise ReleaseRefused(f"malformed release token: fields {sorted(fields)}, expected "
                             f"{sorted({*_FIELDS, 'signature'})}")
    for name, kind in _FIELDS.items():
        value = fields[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = fields[name] = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ReleaseRefused(f"malformed release token: {name} must be a {kind.__name__}")
    if not math.isfinite(fields["issued_at"]):
        raise ReleaseRefused("malformed release token: issued_at is not finite")
    if not isinstance(fields["signature"], str):
        raise ReleaseRefused("malformed release token: signature must be a string")
    return fields


class ReleaseVerifier:
    """Checks release tokens for one node against its release keys (key id -> public key)."""

    def __init__(self, node: str, keys: Mapping[str, Ed25519PublicKey], max_age: float = 30.0,
                 max_future: float = 5.0, session: str | None = None):
        """`session`: this run's id (default: a new random one), published for the operator."""
        if not (math.isfinite(max_age) and max_age > 0 and math.isfinite(max_future) and max_future >= 0):
            raise ValueError(f"max_age must be > 0 and max_future >= 0, got {max_age!r}, {max_future!r}")
        self.node = node
        self.session = secrets.token_hex(8) if session is None else str(session)
        self.keys = dict(keys)
        self.max_age = float(max_age)
        self.max_future = float(max_future)
        self._spent: dict[str, float] = {}  # nonce -> issued_at

    def check(self, text: str, stop_id: int, latched: bool, now: float) -> ReleaseToken:
        """The token if it may release stop `stop_id` (`latched`: whether that stop is still
        latched) at wall-clock time `now`; else ReleaseRefused with the reason. A token whose
        signature is valid is spent here, whatever the outcome."""
        fields = _parse(text)
        if fields["scheme"] != RELEASE_SCHEME:
            raise ReleaseRefused(f"unknown release scheme {fields['scheme']!r} (expected {RELEASE_SCHEME!r})")
        if not self.keys:
            raise ReleaseRefused("no release_keys configured: a latched stop ends only with a restart")
        key = self.keys.get(fields["key_id"])
        if key is None:
            raise ReleaseRefused(f"release signed by unknown key {fields['key_id']!r} "
                                 f"(release keys: {', '.join(sorted(self.keys))})")
        try:
            signature = base64.b64decode(fields["signature"], validate=True)
        except (binascii.Error, ValueError):
            raise ReleaseRefused("malformed release signature: not base64") from None
        try:
            key.verify(signature, _signed_bytes(fields))
        except InvalidSignature:
            raise ReleaseRefused(f"bad release signature for key {fields['key_id']!r}: "
                                 "the token was changed after signing") from None
        token = ReleaseToken(fields["node"], fields["session"], fields["stop_id"], fields["issued_at"],
                             fields["nonce"], fields["key_id"])
        spent = token.nonce in self._spent
        self._spend(token, now)
        if token.node != self.node:
            raise ReleaseRefused(f"release for node {token.node!r}, this node is {self.node!r}")
        if token.session != self.session:
            raise ReleaseRefused(f"release for run {token.session!r} of this node, this run is "
                                 f"{self.session!r} (the node restarted since it was signed)")
        if token.stop_id != stop_id:
            raise ReleaseRefused(f"release for stop {token.stop_id}, the current stop is {stop_id} "
                                 "(a release never carries over to another stop)")
        if not latched:
            raise ReleaseRefused(f"stop {stop_id} is not latched (released already)")
        age = now - token.issued_at
        if age > self.max_age:
            raise ReleaseRefused(f"release issued {age:.1f} s ago, older than release_max_age "
                                 f"{self.max_age:g} s")
        if -age > self.max_future:
            raise ReleaseRefused(f"release issued {-age:.1f} s in the future (clocks more than "
                                 f"{self.max_future:g} s apart?)")
        if spent:
            raise ReleaseRefused(f"release token already used (nonce {token.nonce[:12]}...)")
        return token

    def _spend(self, token: ReleaseToken, now: float) -> None:
        # A nonce needs remembering only while its token could still pass the age check.
        horizon = now - self.max_age - self.max_future
        for nonce in [n for n, issued in self._spent.items() if issued < horizon]:
            del self._spent[nonce]
        if token.nonce not in self._spent and len(self._spent) >= _REMEMBERED_NONCES:
            # Forgetting a fresh nonce would let its token be used twice; only valid signatures
            # get here, so this is a release key holder's flood.
            raise ReleaseRefused(f"more than {_REMEMBERED_NONCES} release tokens within release_max_age")
        self._spent[token.nonce] = token.issued_at
