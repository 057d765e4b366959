"""Reading a CSR: PEM text in, what its key holder asks for out (``CsrRequest``), or ``BadRequest``.

A CSR is untrusted input from the requester, so it is parsed strictly (one PEM block, strict base64,
at most ``MAX_CSR_BYTES``), its signature must verify with the key it carries (proof of possession),
and every name it asks for is read with the same models, and so the same rules, as a request's
``attributes`` (``shared.evaluation``). What cannot be represented is refused, never dropped.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import Field, ValidationError

from shared.attributes import MAX_ALT_NAMES, AltNameInput, BasicConstraintsInput, SubjectFields
from shared.errors import BadRequest, FieldError
from shared.keys import algorithm_of_public_key

MAX_CSR_BYTES: Final = 16 * 1024
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE REQUEST-----"
_PEM_END: Final = "-----END CERTIFICATE REQUEST-----"


class _CsrNames(SubjectFields):
    alt_names: list[AltNameInput] = Field(default_factory=list)


@dataclass(frozen=True)
class CsrRequest:
    """What a verified CSR asks for; extensions the CSR does not request are None."""

    names: _CsrNames
    key_algorithm: str
    public_key_der: bytes
    key_usages: list[str] | None
    extended_key_usages: list[str] | None
    basic_constraints: BasicConstraintsInput | None


_SUBJECT_OIDS: Final = {
    NameOID.COMMON_NAME: "commonName", NameOID.ORGANIZATION_NAME: "organization",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnit", NameOID.COUNTRY_NAME: "country",
    NameOID.STATE_OR_PROVINCE_NAME: "state", NameOID.LOCALITY_NAME: "locality",
}
_KEY_USAGE_FLAGS: Final = {
    "digital_signature": "digital_signature", "non_repudiation": "content_commitment",
    "key_encipherment": "key_encipherment", "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement", "key_cert_sign": "key_cert_sign", "crl_sign": "crl_sign",
}
_EKU_NAMES: Final = {
    ExtendedKeyUsageOID.SERVER_AUTH: "server_auth", ExtendedKeyUsageOID.CLIENT_AUTH: "client_auth",
    ExtendedKeyUsageOID.CODE_SIGNING: "code_signing",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "email_protection",
    ExtendedKeyUsageOID.OCSP_SIGNING: "ocsp_signing", ExtendedKeyUsageOID.TIME_STAMPING: "time_stamping",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "any_purpose",
}


def _short(error: Exception) -> str:
    return str(error)[:200]


def _field_errors(prefix: str, error: ValidationError) -> list[FieldError]:
    errors = []
    for item in error.errors():
        path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"])
        errors.append(FieldError(path, item["msg"]))
    return errors


def _load_csr(csr_pem: str) -> x509.CertificateSigningRequest:
    """Parse the PEM text strictly: one CSR block, nothing around it but whitespace, strict base64."""
    size = len(csr_pem.encode("utf-8", "replace"))
    if size > MAX_CSR_BYTES:
        raise BadRequest(f"CSR is {size} bytes; at most {MAX_CSR_BYTES} bytes (16 KiB) are accepted",
                         [FieldError("csr", "too large")])
    text = csr_pem.strip()
    if text.count(_PEM_BEGIN) != 1 or not text.startswith(_PEM_BEGIN) or not text.endswith(_PEM_END) \
            or text.count(_PEM_END) != 1:
        raise BadRequest(f"CSR must be PEM text holding exactly one '{_PEM_BEGIN}' block and nothing else",
                         [FieldError("csr", "not a single PEM certificate request")])
    body = "".join(text[len(_PEM_BEGIN):-len(_PEM_END)].split())
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise BadRequest("CSR PEM body is not valid base64", [FieldError("csr", "bad base64")]) from None
    try:
        return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise BadRequest(f"CSR is not a valid PKCS#10 certification request: {_short(exc)}",
                         [FieldError("csr", "not PKCS#10")]) from None


def read_csr(csr_pem: str) -> CsrRequest:
    """Parse and verify a PEM CSR and collect what it asks for; BadRequest naming any problem.

    The key must be one the service accepts (``keys.algorithm_of_public_key``) and the CSR's signature
    must verify with it: that is the proof that the requester holds the private key. Only CN, O, OU,
    C, ST and L subject attributes and DNS/IP/email/URI alt names can be represented, so anything else
    is refused rather than silently dropped. Requested extensions other than SAN, key usage, EKU and
    basic constraints are ignored: the certificate's extensions are decided by the service.
    """
    csr = _load_csr(csr_pem)
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadRequest(f"CSR public key cannot be loaded: {_short(exc)}",
                         [FieldError("csr", "unsupported public key")]) from None
    try:
        key_algorithm = algorithm_of_public_key(public_key)
    except BadRequest as exc:
        raise BadRequest(exc.detail, [FieldError("csr", exc.detail)]) from None
    try:
        signature_valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        signature_valid = False
    if not signature_valid:
        raise BadRequest("CSR signature does not verify with its public key: the CSR was altered or "
                         "not signed by the key it contains", [FieldError("csr", "bad signature")])

    errors: list[FieldError] = []
    names: dict[str, Any] = {}
    for attribute in csr.subject:
        field = _SUBJECT_OIDS.get(attribute.oid)
        if field is None:
            errors.append(FieldError("csr.subject", f"subject attribute {attribute.rfc4514_attribute_name} "
                                     "is not supported; use CN, O, OU, C, ST, L only"))
        elif field in names:
            errors.append(FieldError(f"csr.{field}", f"more than one {field} in the subject"))
        else:
            names[field] = attribute.value

    try:
        extensions = csr.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        which = "subjectAltName extension" if "subject_alternative_name" in str(exc) else "extension request"
        raise BadRequest(f"CSR's {which} is malformed and cannot be read: {_short(exc)}",
                         [FieldError("csr", f"malformed {which}")]) from None

    alt_names: list[dict[str, str]] = []
    san = _extension(extensions, x509.SubjectAlternativeName)
    if san is not None:
        if len(san) > MAX_ALT_NAMES:
            raise BadRequest(f"CSR requests {len(san)} subject alternative names; at most {MAX_ALT_NAMES} "
                             "are accepted", [FieldError("csr.altNames", "too many")])
        for general_name in san:
            kind = _alt_name_type(general_name)
            if kind is None:
                errors.append(FieldError("csr.altNames", f"alt name {general_name} is not supported; use "
                                         "DNS, IP, email or URI names"))
            else:
                alt_names.append({"type": kind, "value": str(general_name.value)})
    names["altNames"] = alt_names

    try:
        csr_names = _CsrNames.model_validate(names)
    except ValidationError as exc:
        errors += _field_errors("csr", exc)
        csr_names = _CsrNames()
    extended = _extension(extensions, x509.ExtendedKeyUsage)
    eku_names = None
    if extended is not None:
        eku_names = []
        for oid in extended:
            if oid in _EKU_NAMES:
                eku_names.append(_EKU_NAMES[oid])
            else:
                errors.append(FieldError("csr.extendedKeyUsages", f"extended key usage {oid.dotted_string} "
                                         "is not supported"))
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise BadRequest(f"CSR asks for names the service cannot issue: {detail}", errors)

    constraints = _extension(extensions, x509.BasicConstraints)
    return CsrRequest(
        names=csr_names,
        key_algorithm=key_algorithm,
        public_key_der=public_key.public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo),
        key_usages=_key_usage_names(_extension(extensions, x509.KeyUsage)),
        extended_key_usages=eku_names,
        basic_constraints=None if constraints is None else BasicConstraintsInput(
            is_ca=constraints.ca, path_length=constraints.path_length),
    )


E = TypeVar("E", bound=x509.ExtensionType)


def _extension(extensions: x509.Extensions, kind: type[E]) -> E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _alt_name_type(general_name: x509.GeneralName) -> str | None:
    kinds: list[tuple[type[x509.GeneralName], str]] = [
        (x509.DNSName, "dns_name"), (x509.IPAddress, "ip_address"), (x509.RFC822Name, "email"),
        (x509.UniformResourceIdentifier, "uri"),
    ]
    return next((name for cls, name in kinds if isinstance(general_name, cls)), None)


def _key_usage_names(usage: x509.KeyUsage | None) -> list[str] | None:
    if usage is None:
        return None
    names = [name for name, flag in _KEY_USAGE_FLAGS.items() if getattr(usage, flag)]
    # cryptography raises on encipher_only/decipher_only unless key_agreement is set.
    if usage.key_agreement:
        names += [name for name in ("encipher_only", "decipher_only") if getattr(usage, name)]
    return names

