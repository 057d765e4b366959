"""Where a leaked private key could hide, and a tap on the broker. Not a test module.

``leak_forms`` lists the texts a private key would show if it were stored, logged or queued in any
common encoding; ``BrokerTap`` records every command the stack's Redis database receives (``MONITOR``),
so a message the worker consumed at once is still seen, whatever the timing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
from typing import Any

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def _int_bytes(n: int, length: int | None = None) -> bytes:
    return n.to_bytes(length or (n.bit_length() + 7) // 8, "big")


def _secret_parts(key: Any) -> dict[str, bytes]:
    """The values that make a key private (no public part: those are in the certificate)."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        return {"RSA d": _int_bytes(numbers.d), "RSA p": _int_bytes(numbers.p), "RSA q": _int_bytes(numbers.q)}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"EC scalar": _int_bytes(key.private_numbers().private_value, (key.curve.key_size + 7) // 8)}
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return {"Ed25519 seed": key.private_bytes_raw()}


def leak_forms(pem: str) -> dict[str, str]:
    """Texts that would betray the private key of ``pem`` (PKCS#8 PEM, as the API hands it out).

    Hex forms are lower case: search them in a lower-cased haystack. Fragments come only from the
    secret parts (RSA d, p, q; the EC scalar; the Ed25519 seed), never from DER that also holds the
    public key, which the certificate rightly shows. Base64 fragments are given at all three byte
    alignments, so a key embedded in a larger base64 blob (a Celery message body) is found too.
    """
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    whole = {"PKCS#8 DER": key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())}
    if not isinstance(key, ed25519.Ed25519PrivateKey):  # Ed25519 has no traditional (SEC 1 / PKCS#1) form
        whole["traditional DER"] = key.private_bytes(serialization.Encoding.DER,
                                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                                     serialization.NoEncryption())
    forms = {f"PEM body line {i}": line for i, line in enumerate(pem.strip().splitlines()[1:-1])
             if len(line) == 64}
    for name, blob in {**whole, **_secret_parts(key)}.items():
        forms[f"hex of the {name}"] = blob.hex()
        forms[f"base64 of the {name}"] = base64.b64encode(blob).decode()
        forms[f"urlsafe base64 of the {name}"] = base64.urlsafe_b64encode(blob).decode().rstrip("=")
    for name, blob in _secret_parts(key).items():
        start = (len(blob) - 27) // 2
        forms[f"hex of 16 bytes inside the {name}"] = blob[start:start + 16].hex()
        for offset in range(3):
            forms[f"base64 of 24 bytes inside the {name} (alignment {offset})"] = base64.b64encode(
                blob[start + offset:start + offset + 24]).decode()
    return forms


def found_in(forms: dict[str, str], haystack: str) -> list[str]:
    """The names of the forms found in ``haystack``."""
    lower = haystack.lower()
    return [name for name, text in forms.items() if text in (lower if name.startswith("hex") else haystack)]


# -- the broker ------------------------------------------------------------------------------------

_MONITOR_LINE = re.compile(rb"^[0-9.]+ \[(\d+) [^\]]*\] (.*)$", re.S)
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.S)
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8}


def _unquote(arg: bytes) -> bytes:
    """Undo Redis's ``sdscatrepr`` quoting of a MONITOR argument."""
    out = bytearray()
    i = 0
    while i < len(arg):
        if arg[i] == 0x5C and i + 1 < len(arg):  # backslash
            if arg[i + 1] == ord("x"):
                out.append(int(arg[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(_ESCAPES.get(arg[i + 1], arg[i + 1]))
            i += 2
            continue
        out.append(arg[i])
        i += 1
    return bytes(out)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def readable_texts(data: bytes, depth: int = 3) -> list[str]:
    """``data`` as text, plus every string inside it if it is JSON, plus those strings base64-decoded
    (kombu base64-encodes each message body), recursively."""
    texts = [data.decode("latin-1")]
    if depth == 0:
        return texts
    try:
        parsed = json.loads(data)
    except ValueError:
        return texts
    for s in _strings(parsed):
        texts.append(s)
        try:
            decoded = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError):
            continue
        if decoded:
            texts.extend(readable_texts(decoded, depth - 1))
    return texts


class BrokerTap:
    """Every command the stack's Redis database receives while the tap runs, with its arguments."""

    def __init__(self, broker_url: str, db: int) -> None:
        self._url = broker_url
        self._db = db
        self._sentinel = f"kms-observer-tap-{secrets.token_hex(8)}".encode()
        self._client = redis.Redis.from_url(broker_url, socket_timeout=1)
        self._monitor = self._client.monitor()  # type: ignore[no-untyped-call]
        self.commands: list[list[bytes]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, name="broker-tap", daemon=True)

    def __enter__(self) -> BrokerTap:
        self._monitor.__enter__()  # MONITOR is on before the first command we want to see
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Commands reach MONITOR in order: once our own ECHO comes back, everything before it has.
        redis.Redis.from_url(self._url).echo(self._sentinel)
        self._thread.join(30)
        self._monitor.__exit__()
        assert self._done.is_set(), "the broker tap never saw its own sentinel"

    def _read(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                line = self._monitor.connection.read_response()
            except redis.TimeoutError:
                continue
            if not isinstance(line, bytes):
                continue
            match = _MONITOR_LINE.match(line)
            if match is None or int(match.group(1)) != self._db:
                continue  # another stack's database (the Redis server is shared)
            args = [_unquote(a) for a in _QUOTED.findall(match.group(2))]
            if self._sentinel in args:
                self._done.set()
                return
            self.commands.append(args)

    def texts(self) -> list[str]:
        return [text for args in self.commands for arg in args for text in readable_texts(arg)]
