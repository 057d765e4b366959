"""Request evaluation: an issuance request, its profile's defaults and its policy -> one template.

``evaluate_request`` is the pure core of issuance: it reads the CSR (if any), merges the request's
attributes with the profile's defaults, checks the result against RFC 5280 coherence rules and the
certificate policy, and returns the ``CertificateTemplate`` the worker will sign. Everything the signer
trusts is decided here, so everything a caller can get wrong is reported here, all at once.

Error classes: malformed input (unreadable or oversized CSR, weak key, contradictory request, no
validity at all) is ``BadRequest`` (400); a well-formed request the service will not issue (policy
violations, and RFC 5280 incoherence such as ``key_cert_sign`` without ``isCA``) is one
``PolicyViolation`` (422) listing every problem.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from shared.errors import BadRequest, FieldError, PolicyViolation
from shared.keys import algorithm_of_public_key
from shared.policy import ExtendedKeyUsageName, KeyUsageName, PolicyRules, SanType, check_template
from shared.template import AltName, CertificateTemplate, SubjectName, Validity
from shared.ttl import parse_ttl

# Same names as shared.keys.KEY_ALGORITHMS / SIGNATURE_ALGORITHMS (a unit test keeps them equal);
# spelled as Literals so that /openapi.json lists them.
KeyAlgorithmName = Literal[
    "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1", "EC_secp384r1", "EC_secp521r1", "ED25519"
]
SignatureAlgorithmName = Literal[
    "RSA-SHA256", "RSA-SHA384", "RSA-SHA512", "ECDSA-SHA256", "ECDSA-SHA384", "ECDSA-SHA512", "ED25519"
]

MAX_CSR_BYTES: Final = 16 * 1024
# A service limit, not a policy: more names is refused as malformed (400) before any policy runs.
MAX_ALT_NAMES: Final = 100
DEFAULT_KEY_ALGORITHM: Final = "EC_prime256v1"
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE REQUEST-----"
_PEM_END: Final = "-----END CERTIFICATE REQUEST-----"


def _no_control_characters(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


def _valid_ttl(value: str) -> str:
    parse_ttl(value)
    return value


# Upper bounds of RFC 5280 appendix A (ub-common-name, ub-organization-name, ub-state-name, ...).
_Printable = AfterValidator(_no_control_characters)
Text64 = Annotated[str, StringConstraints(min_length=1, max_length=64), _Printable]
Text128 = Annotated[str, StringConstraints(min_length=1, max_length=128), _Printable]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$"), AfterValidator(str.upper)]
Ttl = Annotated[str, AfterValidator(_valid_ttl)]

_LABEL: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_URI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+")


def _dns_name(value: str, *, wildcard: bool) -> str:
    """A lower-cased host name of LDH labels; ``*.`` only as the whole leftmost label."""
    if not value.isascii():
        raise ValueError(f"{value!r} is not ASCII; write internationalized names in their 'xn--' form")
    name = value.lower()
    host = name[2:] if wildcard and name.startswith("*.") else name
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError(f"{value!r} is not a valid DNS name")
    return name


def _alt_name_value(kind: str, value: str) -> str:
    """``value`` checked (and normalized: DNS lower-cased, IPs canonical) for an alt name of ``kind``."""
    if kind == "dns_name":
        return _dns_name(value, wildcard=True)
    if kind == "ip_address":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if kind == "email":
        local, at, domain = value.partition("@")
        if not at or not local or "@" in domain or len(value) > 255 or not value.isascii() or " " in local:
            raise ValueError(f"{value!r} is not an email address (local@domain, ASCII)")
        return f"{local}@{_dns_name(domain, wildcard=False)}"
    if not value.isascii() or not _URI.fullmatch(value):
        raise ValueError(f"{value!r} is not an absolute URI with a scheme (e.g. spiffe://example.org/x)")
    return value


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields rejected, as everywhere in the API."""

    model_config = ConfigDict(populate_by_name=True, alias_generator=to_camel, extra="forbid")


class AltNameInput(ApiModel):
    type: SanType
    value: str = Field(min_length=1, max_length=2048)

    @field_validator("value")
    @classmethod
    def _valid_for_type(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        return value if kind is None else _alt_name_value(kind, value)


class BasicConstraintsInput(ApiModel):
    is_ca: bool = Field(default=False, alias="isCA")
    path_length: int | None = Field(default=None, ge=0, le=100)


class SubjectFields(ApiModel):
    """The subject attributes a request, a profile default or a CSR can carry."""

    common_name: Text64 | None = None
    organization: Text64 | None = None
    organizational_unit: Text64 | None = None
    country: Country | None = None
    state: Text128 | None = None
    locality: Text128 | None = None


class IssueAttributes(SubjectFields):
    """The ``attributes`` of ``POST /certificates``: what the caller asks to be in the certificate."""

    alt_names: list[AltNameInput] = Field(default_factory=list, max_length=MAX_ALT_NAMES)
    key_usages: list[KeyUsageName] | None = None
    extended_key_usages: list[ExtendedKeyUsageName] | None = None
    key_algorithm: KeyAlgorithmName | None = None
    signature_algorithm: SignatureAlgorithmName | None = None
    ttl: Ttl | None = None
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None
    basic_constraints: BasicConstraintsInput | None = None

    @model_validator(mode="after")
    def _one_validity(self) -> IssueAttributes:
        window = (self.not_before, self.not_after)
        if self.ttl is not None and any(end is not None for end in window):
            raise ValueError("give either ttl or notBefore+notAfter, not both")
        if (self.not_before is None) != (self.not_after is None):
            raise ValueError("notBefore and notAfter must be given together")
        if self.not_before is not None and self.not_after is not None and self.not_after <= self.not_before:
            raise ValueError("notAfter must be later than notBefore")
        return self


class ProfileDefaults(SubjectFields):
    """What a profile puts in a certificate when the request does not say."""

    ttl: Ttl | None = None
    key_algorithm: KeyAlgorithmName | None = None
    signature_algorithm: SignatureAlgorithmName | None = None
    key_usages: list[KeyUsageName] | None = None
    extended_key_usages: list[ExtendedKeyUsageName] | None = None


class ApiConfig(ApiModel):
    auto_renew: bool = False
    renew_before_days: int | None = Field(default=None, ge=1, le=3650)


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


def _fallback_usages(required: Sequence[str] | None, builtin: set[str]) -> frozenset[str]:
    # The policy's required usages are the most useful guess when nobody named any.
    return frozenset(required) if required else frozenset(builtin)


def _contradictions(attributes: IssueAttributes, csr: CsrRequest) -> list[FieldError]:
    """Names given in the attributes must repeat the CSR's: the CSR is what the key holder signed."""
    errors = []
    for name, info in SubjectFields.model_fields.items():
        given, signed = getattr(attributes, name), getattr(csr.names, name)
        if given is not None and given != signed:
            alias = info.alias or name
            errors.append(FieldError(f"attributes.{alias}", f"{alias} {given!r} contradicts the CSR's "
                                     f"{signed!r}; omit it or repeat the CSR's value"))
    given_alt = {(a.type, a.value) for a in attributes.alt_names}
    if given_alt and given_alt != {(a.type, a.value) for a in csr.names.alt_names}:
        errors.append(FieldError("attributes.altNames", "altNames differ from the CSR's subject alternative "
                                 "names; omit them or repeat the CSR's exactly"))
    if attributes.key_algorithm is not None and attributes.key_algorithm != csr.key_algorithm:
        errors.append(FieldError("attributes.keyAlgorithm", f"keyAlgorithm {attributes.key_algorithm!r} "
                                 f"contradicts the CSR's {csr.key_algorithm} key"))
    return errors


def _validity(attributes: IssueAttributes, defaults: ProfileDefaults) -> Validity:
    if attributes.ttl is not None:
        return Validity(ttl_seconds=parse_ttl(attributes.ttl))
    if attributes.not_before is not None and attributes.not_after is not None:
        return Validity(not_before=attributes.not_before.astimezone(UTC),
                        not_after=attributes.not_after.astimezone(UTC))
    if defaults.ttl is not None:
        return Validity(ttl_seconds=parse_ttl(defaults.ttl))
    raise BadRequest("no validity: give attributes.ttl (e.g. '90d') or notBefore and notAfter, or set a "
                     "default ttl in the profile", [FieldError("attributes.ttl", "required")])


def _coherence(template: CertificateTemplate, now: datetime) -> list[FieldError]:
    """RFC 5280 rules a certificate must satisfy whatever the policy says (pkilint checks them)."""
    errors = []
    if template.subject.is_empty() and not template.alt_names:
        errors.append(FieldError("attributes", "a certificate needs a subject name or at least one altName"))
    if template.is_ca and "key_cert_sign" not in template.key_usages:
        errors.append(FieldError("attributes.keyUsages", "a CA certificate (isCA true) needs key_cert_sign"))
    if not template.is_ca and "key_cert_sign" in template.key_usages:
        errors.append(FieldError("attributes.keyUsages", "key_cert_sign requires basicConstraints.isCA true"))
    if not template.is_ca and template.path_length is not None:
        errors.append(FieldError("attributes.basicConstraints.pathLength",
                                 "pathLength is only allowed with isCA true"))
    for flag in ("encipher_only", "decipher_only"):
        if flag in template.key_usages and "key_agreement" not in template.key_usages:
            errors.append(FieldError("attributes.keyUsages", f"{flag} requires key_agreement"))
    not_after = template.validity.not_after
    if not_after is not None and not_after <= now:
        errors.append(FieldError("attributes.notAfter",
                                 f"notAfter {not_after.isoformat()} is not in the future"))
    return errors


def evaluate_request(
    *,
    rules: PolicyRules,
    defaults: ProfileDefaults,
    attributes: IssueAttributes | None,
    csr_pem: str | None,
    now: datetime,
) -> CertificateTemplate:
    """The certificate template for one issuance request, or the reasons it cannot be issued.

    Precedence, field by field: the CSR, then the request's attributes, then the profile's defaults
    (so subject fields a CSR leaves empty, such as O, are filled from the profile's defaults).
    Names (subject, altNames) and the key algorithm given in attributes alongside a CSR must be absent
    or equal to the CSR's (else BadRequest); key usages, EKUs and basic constraints in the attributes
    replace the ones the CSR requests. An empty list counts as "not given".

    When nothing names key usages: a CA gets key_cert_sign + crl_sign; a leaf gets the policy's
    required usages if it has some, else digital_signature (+ key_encipherment for RSA keys). Likewise
    for EKUs: none for a CA; for a leaf the policy's required EKUs, else server_auth. Without a CSR
    the key algorithm (request, default, else EC_prime256v1) is the key the worker generates.
    A validity is required (ttl or notBefore+notAfter in the request, else the profile's ttl).

    Raises BadRequest for malformed input and one PolicyViolation listing every RFC 5280
    incoherence and every policy violation.
    """
    attributes = attributes or IssueAttributes()
    csr = read_csr(csr_pem) if csr_pem is not None else None
    if csr is not None:
        contradictions = _contradictions(attributes, csr)
        if contradictions:
            detail = "; ".join(f"{e.field}: {e.message}" for e in contradictions)
            raise BadRequest(f"attributes contradict the CSR: {detail}", contradictions)

    names: SubjectFields = csr.names if csr is not None else attributes
    subject = SubjectName(**{
        name: getattr(names, name) or getattr(attributes, name) or getattr(defaults, name)
        for name in SubjectFields.model_fields
    })
    alt_inputs = csr.names.alt_names if csr is not None else attributes.alt_names
    alt_names = tuple(AltName(type=a.type, value=a.value) for a in alt_inputs)

    key_algorithm = csr.key_algorithm if csr is not None else (
        attributes.key_algorithm or defaults.key_algorithm or DEFAULT_KEY_ALGORITHM)
    constraints = attributes.basic_constraints or (csr.basic_constraints if csr else None)
    is_ca = constraints.is_ca if constraints else False

    requested_usages = attributes.key_usages or (csr.key_usages if csr else None) or defaults.key_usages
    if requested_usages:
        key_usages = frozenset[str](requested_usages)
    elif is_ca:
        key_usages = frozenset({"key_cert_sign", "crl_sign"})
    else:
        builtin = {"digital_signature", "key_encipherment"} if key_algorithm.startswith("RSA") \
            else {"digital_signature"}
        key_usages = _fallback_usages(rules.key_usages.required if rules.key_usages else None, builtin)

    requested_ekus = (attributes.extended_key_usages or (csr.extended_key_usages if csr else None)
                      or defaults.extended_key_usages)
    if requested_ekus:
        ekus = frozenset[str](requested_ekus)
    elif is_ca:
        ekus = frozenset()
    else:
        required = rules.extended_key_usages.required if rules.extended_key_usages else None
        ekus = _fallback_usages(required, {"server_auth"})

    template = CertificateTemplate(
        subject=subject,
        alt_names=alt_names,
        key_usages=key_usages,
        extended_key_usages=ekus,
        key_algorithm=key_algorithm,
        signature_algorithm=attributes.signature_algorithm or defaults.signature_algorithm,
        validity=_validity(attributes, defaults),
        is_ca=is_ca,
        path_length=constraints.path_length if constraints else None,
        public_key_der=csr.public_key_der if csr is not None else None,
    )
    errors = _coherence(template, now) + check_template(rules, template)
    if errors:
        raise PolicyViolation(errors)
    return template
