"""Weak CSR keys (Boulder's goodkey, CA/B Forum BR 6.1.1.3 and 6.1.6): refused naming the ``csr`` field.

Where a real key pair can carry the weakness (exponent 3, a factor of 751, primes side by side) the
test signs a real CSR with it and sends it through ``read_csr``, the door every request comes in by;
where no private key can exist (an even exponent, a modulus that is a square or a cube) the pure
check on the public numbers is tested.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import BadRequest
from shared.pki.csr import FERMAT_ROUNDS, _fermat_factor, _integer_root, read_csr, rsa_key_weakness
from tests.issuance.csrs import make_csr

_SMALL = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47)


def _is_prime(n: int) -> bool:
    """Miller-Rabin with the first twelve prime bases (deterministic far beyond what a test meets)."""
    if n < 2:
        return False
    for p in (2, *_SMALL):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


_SIEVE = math.prod(n for n in range(3, 2000, 2) if all(n % d for d in range(3, math.isqrt(n) + 1, 2)))


def _next_prime(n: int) -> int:
    n |= 1
    while math.gcd(n, _SIEVE) != 1 or not _is_prime(n):  # the gcd spares most candidates Miller-Rabin
        n += 2
    return n


def _private_key(p: int, q: int, e: int = 65537) -> rsa.RSAPrivateKey:
    """The RSA key of primes p and q, its CRT values computed here (cryptography checks them)."""
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                    rsa.RSAPublicNumbers(e, p * q))
    return numbers.private_key()


def _prime_of_bits(bits: int) -> int:
    """A random prime of ``bits`` bits, from a key cryptography generates (fast and certainly prime)."""
    p: int = rsa.generate_private_key(public_exponent=65537, key_size=2 * bits).private_numbers().p
    return p


def _csr(key: Any) -> str:
    return make_csr(key, cn="api.example.com", sans=())


def _refusal(csr_pem: str) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        read_csr(csr_pem)
    return caught.value


def _public(e: int, n: int) -> rsa.RSAPublicNumbers:
    return rsa.RSAPublicNumbers(e, n)


# -- real CSRs through read_csr -----------------------------------------------------------------------

def test_csr_with_public_exponent_3_is_refused_naming_the_csr_field() -> None:
    weak = rsa.generate_private_key(public_exponent=3, key_size=2048)

    refusal = _refusal(_csr(weak))

    assert refusal.status == 400
    assert "RSA public exponent 3 is refused" in refusal.detail
    assert [(e.field, "exponent 3" in e.message) for e in refusal.errors] == [("csr", True)]


def test_csr_whose_modulus_has_a_small_prime_factor_is_refused() -> None:
    weak = _private_key(751, _prime_of_bits(2038))  # 2048 bits: past the size check
    assert weak.key_size >= 2048

    refusal = _refusal(_csr(weak))

    assert "divisible by 751" in refusal.detail
    assert [e.field for e in refusal.errors] == ["csr"]


def test_csr_whose_primes_are_neighbours_is_refused_by_fermat_factorisation() -> None:
    p = _prime_of_bits(1024)
    weak = _private_key(p, _next_prime(p + 2))

    refusal = _refusal(_csr(weak))

    assert "Fermat" in refusal.detail and "close together" in refusal.detail
    assert [e.field for e in refusal.errors] == ["csr"]


def test_csr_with_an_ec_point_off_its_curve_is_refused_as_an_unloadable_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    der = x509.load_pem_x509_csr(_csr(key).encode()).public_bytes(serialization.Encoding.DER)
    assert der.count(point) == 1
    off_curve = der.replace(point, point[:-1] + bytes([point[-1] ^ 0x01]))  # y changed, x kept
    with pytest.raises(ValueError, match="Invalid key"):  # cryptography checks the point on loading
        x509.load_der_x509_csr(off_curve).public_key()

    body = base64.encodebytes(off_curve).decode()
    refusal = _refusal(f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n")

    assert "CSR public key cannot be loaded" in refusal.detail
    assert [e.field for e in refusal.errors] == ["csr"]


def test_ordinary_rsa_csr_is_still_accepted() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert read_csr(_csr(key)).key_algorithm == "RSA_2048"


# -- the public-number check, for weaknesses no private key can carry ---------------------------------

_P = _prime_of_bits(1024)
_Q = _prime_of_bits(1024)


@pytest.mark.parametrize(("e", "fragment"), [
    (65538, "exponent 65538 is refused"),  # even: no RSA key has it (cryptography will not load one)
    (1, "exponent 1 is refused"),
    (65535, "exponent 65535 is refused"),
    (2**256 + 1, "exponent of 257 bits is refused"),
], ids=["even", "one", "below-65537", "above-2^256"])
def test_public_exponent_outside_the_baseline_range_is_refused(e: int, fragment: str) -> None:
    weakness = rsa_key_weakness(_public(e, _P * _Q))
    assert weakness is not None and fragment in weakness


def test_odd_public_exponent_above_65537_is_accepted() -> None:
    assert rsa_key_weakness(_public(65539, _P * _Q)) is None


@pytest.mark.parametrize(("n", "fragment"), [
    (2 * _P * _Q, "divisible by 2"),
    (3 * _P * _Q, "divisible by 3"),
    (_P * _P, "perfect power (r^2"),
    (_next_prime(2**683) ** 3, "perfect power (r^3"),
], ids=["even", "factor-3", "square", "cube"])
def test_modulus_that_is_not_two_distinct_large_primes_is_refused(n: int, fragment: str) -> None:
    weakness = rsa_key_weakness(_public(65537, n))
    assert weakness is not None and fragment in weakness, weakness


def _modulus_at_fermat_distance(rounds_needed: int) -> int:
    """n = (c - b)(c + b) whose factors Fermat's method finds in exactly ``rounds_needed`` rounds.

    The method tries a = ceil(sqrt n), ceil(sqrt n) + 1, ... and succeeds at a = c; so pick b, by
    search, to put ceil(sqrt(c^2 - b^2)) exactly ``rounds_needed - 1`` below c.
    """
    c = 2**1023 + 12345
    b = math.isqrt(2 * c * rounds_needed)
    while True:
        n = (c - b) * (c + b)
        start = math.isqrt(n) + (math.isqrt(n) ** 2 < n)
        if c - start == rounds_needed - 1:
            return n
        b += 1 if c - start < rounds_needed - 1 else -1


def test_fermat_check_finds_factors_within_its_rounds_and_no_further() -> None:
    assert FERMAT_ROUNDS >= 100  # the Baseline Requirements' minimum
    assert _fermat_factor(_modulus_at_fermat_distance(FERMAT_ROUNDS), FERMAT_ROUNDS) is not None
    assert _fermat_factor(_modulus_at_fermat_distance(FERMAT_ROUNDS + 1), FERMAT_ROUNDS) is None


def test_rsa_modulus_over_16384_bits_is_refused_before_any_costly_check() -> None:
    weakness = rsa_key_weakness(_public(65537, (1 << 16384) + 1))
    assert weakness is not None and "at most 16384 bits" in weakness


@given(st.integers(min_value=1, max_value=2**3000), st.integers(min_value=2, max_value=400))
def test_integer_root_is_the_floor_of_the_real_root(n: int, k: int) -> None:
    root = _integer_root(n, k)
    assert root**k <= n < (root + 1) ** k
