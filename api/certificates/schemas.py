"""The HTTP models of issuance: the request body, its fingerprint for idempotency, and the read models.

What a body asks for is validated and written by the registration authority (``shared.registration``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import Field

from shared.camel import CamelModel
from shared.db.requests import CertificateRow, ListedRequest, RequestRow
from shared.errors import BadRequest, FieldError
from shared.pki.csr import MAX_CSR_BYTES
from shared.policy.attributes import IssueAttributes
from shared.registration import stored_attributes

MAX_WAIT_SECONDS = 30
IDEMPOTENCY_KEY_MAX = 255


class IssueBodyAttributes(IssueAttributes):
    """The attributes as upstream's clients send them: the KMS agent puts ``removeRootsFromChain`` here."""

    remove_roots_from_chain: bool | None = None

    def for_registration(self) -> IssueAttributes:
        """The attributes proper, as the registration authority evaluates and stores them."""
        given = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        given.pop("removeRootsFromChain", None)
        return IssueAttributes.model_validate(given)


class IssueBody(CamelModel):
    profile_id: UUID
    # Upstream's application the profile belongs to. The applications table is not on this branch
    # yet: accepted and ignored (see the issue 9 report).
    application_id: UUID | None = None
    # A PEM CSR; its size is checked (with a clear message) by shared.pki.csr.read_csr.
    csr: str | None = Field(default=None, max_length=MAX_CSR_BYTES * 64)
    attributes: IssueBodyAttributes | None = None
    remove_roots_from_chain: bool = False

    def issue_attributes(self) -> IssueAttributes | None:
        return None if self.attributes is None else self.attributes.for_registration()

    def removes_roots(self) -> bool:
        return self.remove_roots_from_chain or bool(self.attributes and self.attributes.remove_roots_from_chain)

    def stored_attributes(self) -> dict[str, Any] | None:
        """The attributes as the registration authority stores them with the request."""
        return stored_attributes(self.issue_attributes())


class RenewBody(CamelModel):
    remove_roots_from_chain: bool | None = None


class CertificateConfigBody(CamelModel):
    """``PATCH /certificates/{id}/config``: the certificate's own server-driven renewal setting."""

    renew_before_days: int | None = Field(default=None, ge=1, le=30)
    enable_auto_renewal: bool | None = None


class CertificateConfigAnswer(CamelModel):
    message: str
    renew_before_days: int | None = None


RevocationReason = Literal["UNSPECIFIED", "KEY_COMPROMISE", "CA_COMPROMISE", "AFFILIATION_CHANGED", "SUPERSEDED",
                           "CESSATION_OF_OPERATION", "CERTIFICATE_HOLD", "PRIVILEGE_WITHDRAWN", "A_A_COMPROMISE"]


class RevokeBody(CamelModel):
    """``POST /certificates/{id}/revoke``: one of upstream's nine reasons (RFC 5280 CRLReason)."""

    revocation_reason: RevocationReason


class RevokeAnswer(CamelModel):
    message: str
    serial_number: str
    revoked_at: datetime


def request_fingerprint(body: CamelModel) -> bytes:
    """What makes two requests (or batches) "the same body" for an Idempotency-Key: the validated content,
    not bytes."""
    canonical = json.dumps(body.model_dump(mode="json", by_alias=True, exclude_unset=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1-255 printable characters",
                         [FieldError("Idempotency-Key", "invalid header value")])
    return key


def wire_status(status: str) -> str:
    """A request's status as upstream names it: one a worker is signing ('processing') is still pending."""
    return "pending" if status == "processing" else status


class IssuedCertificate(CamelModel):
    """``certificate`` of the POST answer once the request is issued."""

    certificate: str
    issuing_ca_certificate: str | None
    certificate_chain: str
    private_key: str | None = None
    serial_number: str
    certificate_id: UUID


class IssueAnswer(CamelModel):
    """The answer of ``POST /certificates``: the certificate (null until issued) and the request to poll."""

    certificate: IssuedCertificate | None
    certificate_request_id: UUID
    status: str
    message: str | None = None

    @classmethod
    def of(cls, request: RequestRow, cert: CertificateRow | None, private_key: str | None = None) -> IssueAnswer:
        issued = None
        if cert is not None and request.status == "issued":
            issued = IssuedCertificate(certificate=cert.certificate_pem, issuing_ca_certificate=cert.issuing_ca_pem,
                                       certificate_chain=cert.chain_pem, private_key=private_key,
                                       serial_number=cert.serial_number, certificate_id=cert.id)
        return cls(certificate=issued, certificate_request_id=request.id, status=wire_status(request.status),
                   message=request.error_message)


class RenewAnswer(CamelModel):
    """The flat answer of ``POST /certificates/{id}/renew`` (nulls until issued)."""

    certificate: str | None = None
    issuing_ca_certificate: str | None = None
    certificate_chain: str | None = None
    private_key: str | None = None
    serial_number: str | None = None
    certificate_id: UUID | None = None
    certificate_request_id: UUID
    status: str

    @classmethod
    def of(cls, request: RequestRow, cert: CertificateRow | None, private_key: str | None = None) -> RenewAnswer:
        view = cls(certificate_request_id=request.id, status=wire_status(request.status))
        if cert is not None and request.status == "issued":
            view.certificate, view.certificate_chain = cert.certificate_pem, cert.chain_pem
            view.issuing_ca_certificate, view.serial_number = cert.issuing_ca_pem, cert.serial_number
            view.certificate_id, view.private_key = cert.id, private_key
        return view


_SUBJECT_KEYS = ("commonName", "organization", "organizationalUnit", "country", "state", "locality")


class CertificateRequestView(CamelModel):
    """``GET /certificate-requests/{id}``: upstream's flat view, plus the extensions
    ``certificateRequestId``, ``certificateChain`` and ``issuingCaCertificate``."""

    certificate_request_id: UUID
    profile_id: UUID
    status: str
    certificate: str | None = None
    certificate_chain: str | None = None
    issuing_ca_certificate: str | None = None
    serial_number: str | None = None
    certificate_id: UUID | None = None
    private_key: str | None = None
    error_message: str | None = None
    common_name: str | None = None
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None
    state: str | None = None
    locality: str | None = None
    alt_names: list[dict[str, Any]] | None = None
    key_usages: list[str] | None = None
    extended_key_usages: list[str] | None = None
    key_algorithm: str | None = None
    signature_algorithm: str | None = None
    ttl: str | None = None
    basic_constraints: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, request: RequestRow, cert: CertificateRow | None, private_key: str | None = None
           ) -> CertificateRequestView:
        asked = request.attributes or {}
        view = cls(certificate_request_id=request.id, profile_id=request.profile_id,
                   status=wire_status(request.status), error_message=request.error_message,
                   created_at=request.created_at, updated_at=request.updated_at,
                   **{k: asked.get(k) for k in (*_SUBJECT_KEYS, "altNames", "keyUsages", "extendedKeyUsages",
                                                "keyAlgorithm", "signatureAlgorithm", "ttl", "basicConstraints")})
        if request.status == "issued":
            # Known from the request row alone: the list (which loads no certificates) still links to it.
            view.certificate_id = request.certificate_id
        if cert is not None and request.status == "issued":
            view.certificate = cert.certificate_pem
            view.certificate_chain = cert.chain_pem
            view.issuing_ca_certificate = cert.issuing_ca_pem
            view.serial_number = cert.serial_number
            view.certificate_id = cert.id
            view.private_key = private_key
            view.common_name = view.common_name or cert.common_name
            view.key_algorithm = view.key_algorithm or cert.key_algorithm
        return view


class CertificateSummary(CamelModel):
    id: UUID
    serial_number: str
    status: str


class CertificateRequestItem(CamelModel):
    """One row of the request list (upstream's shape; ``certificateRequestId`` is an extension)."""

    id: UUID
    certificate_request_id: UUID
    status: str
    common_name: str | None
    alt_names: list[dict[str, Any]]
    profile_id: UUID
    profile_name: str | None
    ca_id: UUID | None
    certificate_id: UUID | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    certificate: CertificateSummary | None


class CertificateRequestList(CamelModel):
    certificate_requests: list[CertificateRequestItem]
    total_count: int
    next_cursor: str | None = None


def certificate_status(not_after: datetime, now: datetime | None = None, revoked_at: datetime | None = None) -> str:
    """active, revoked (whether or not it has expired since) or expired (DESIGN.md 7)."""
    if revoked_at is not None:
        return "revoked"
    return "expired" if not_after <= (now or datetime.now(UTC)) else "active"


class Fingerprints(CamelModel):
    sha256: str
    sha1: str


class CertificateMetadata(CamelModel):
    """``GET /certificates/{id}`` -> ``{certificate: ...}`` (upstream's fields; ``certificateRequestId``,
    ``keyAlgorithm`` and ``hasPrivateKey`` are extensions)."""

    id: UUID
    project_id: UUID
    profile_id: UUID
    ca_id: UUID | None
    status: str
    serial_number: str
    common_name: str | None
    alt_names: list[dict[str, str]]
    key_usages: list[str]
    extended_key_usages: list[str]
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    renew_before_days: int | None = None
    # Extension (upstream has it in its database): why the last server-driven renewal failed.
    renewal_error: str | None = None
    renewed_from_certificate_id: UUID | None
    renewed_by_certificate_id: UUID | None
    subject: dict[str, str]
    fingerprints: Fingerprints
    basic_constraints: dict[str, Any]
    ca_name: str | None = None
    ca_type: str | None = None
    profile_name: str | None = None
    certificate_request_id: UUID
    key_algorithm: str
    has_private_key: bool
    created_at: datetime
    updated_at: datetime


class CertificateView(CamelModel):
    certificate: CertificateMetadata

    @classmethod
    def of(cls, cert: CertificateRow, *, profile_name: str | None = None, ca_name: str | None = None,
           ca_type: str | None = None, renew_before_days: int | None = None) -> CertificateView:
        leaf = x509.load_pem_x509_certificate(cert.certificate_pem.encode())
        return cls(certificate=CertificateMetadata(
            id=cert.id, project_id=cert.project_id, profile_id=cert.profile_id, ca_id=cert.ca_id,
            status=certificate_status(cert.not_after, revoked_at=cert.revoked_at), serial_number=cert.serial_number,
            revoked_at=cert.revoked_at, revocation_reason=cert.revocation_reason,
            common_name=cert.common_name, alt_names=_alt_names(leaf), key_usages=_key_usages(leaf),
            extended_key_usages=_extended_key_usages(leaf), not_before=cert.not_before, not_after=cert.not_after,
            renew_before_days=renew_before_days if renew_before_days is not None else cert.renew_before_days,
            renewal_error=cert.renewal_error, renewed_from_certificate_id=cert.renewed_from_id,
            renewed_by_certificate_id=cert.renewed_by_id, subject=_subject(leaf.subject),
            fingerprints=Fingerprints(sha256=leaf.fingerprint(hashes.SHA256()).hex(),
                                      sha1=leaf.fingerprint(hashes.SHA1()).hex()),  # noqa: S303 - a name, not a MAC
            basic_constraints=_basic_constraints(leaf), ca_name=ca_name, ca_type=ca_type, profile_name=profile_name,
            certificate_request_id=cert.request_id, key_algorithm=cert.key_algorithm,
            has_private_key=cert.encrypted_private_key is not None, created_at=cert.created_at,
            updated_at=cert.created_at))


_SUBJECT_NAMES = {
    NameOID.COMMON_NAME: "commonName", NameOID.ORGANIZATION_NAME: "organization",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnit", NameOID.COUNTRY_NAME: "country",
    NameOID.STATE_OR_PROVINCE_NAME: "state", NameOID.LOCALITY_NAME: "locality",
}
_KEY_USAGE_FLAGS = (
    ("digital_signature", "digital_signature"), ("non_repudiation", "content_commitment"),
    ("key_encipherment", "key_encipherment"), ("data_encipherment", "data_encipherment"),
    ("key_agreement", "key_agreement"), ("key_cert_sign", "key_cert_sign"), ("crl_sign", "crl_sign"),
)
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "server_auth", ExtendedKeyUsageOID.CLIENT_AUTH: "client_auth",
    ExtendedKeyUsageOID.CODE_SIGNING: "code_signing", ExtendedKeyUsageOID.EMAIL_PROTECTION: "email_protection",
    ExtendedKeyUsageOID.OCSP_SIGNING: "ocsp_signing", ExtendedKeyUsageOID.TIME_STAMPING: "time_stamping",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "any_purpose",
}


def _subject(name: x509.Name) -> dict[str, str]:
    subject: dict[str, str] = {}
    for attribute in name:
        key = _SUBJECT_NAMES.get(attribute.oid)
        if key is not None and key not in subject:
            subject[key] = str(attribute.value)
    return subject


def _alt_names(leaf: x509.Certificate) -> list[dict[str, str]]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [{"type": "dns_name", "value": v} for v in san.get_values_for_type(x509.DNSName)]
    names += [{"type": "ip_address", "value": str(v)} for v in san.get_values_for_type(x509.IPAddress)]
    names += [{"type": "email", "value": v} for v in san.get_values_for_type(x509.RFC822Name)]
    names += [{"type": "uri", "value": v} for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
    return names


def _key_usages(leaf: x509.Certificate) -> list[str]:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    names = [name for name, flag in _KEY_USAGE_FLAGS if getattr(usage, flag)]
    if usage.key_agreement:
        names += [name for name in ("encipher_only", "decipher_only") if getattr(usage, name)]
    return names


def _extended_key_usages(leaf: x509.Certificate) -> list[str]:
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in usages]


def _basic_constraints(leaf: x509.Certificate) -> dict[str, Any]:
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return {"isCA": False, "pathLength": None}
    return {"isCA": constraints.ca, "pathLength": constraints.path_length}


class CertificateBody(CamelModel):
    certificate: str
    certificate_chain: str
    issuing_ca_certificate: str | None
    serial_number: str
    private_key: str | None = None


WIRE_STATUSES = ("pending", "pending_approval", "issued", "failed", "rejected")
# A wire status -> the database statuses it covers (upstream's pending_approval and rejected: none yet).
DB_STATUSES: dict[str, list[str]] = {"pending": ["pending", "processing"], "issued": ["issued"],
                                     "failed": ["failed"], "pending_approval": [], "rejected": []}


class RequestSearch(CamelModel):
    """The filters of ``GET /certificate-requests`` (query) and ``POST /certificate-requests/search`` (body)."""

    project_id: UUID | None = None
    project_slug: str | None = Field(default=None, max_length=200)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    limit: int = Field(default=20, ge=1, le=100)
    search: str | None = Field(default=None, max_length=255)
    status: Literal["pending", "pending_approval", "issued", "failed", "rejected"] | None = None
    from_date: datetime | None = None
    to_date: datetime | None = None
    profile_ids: list[UUID] | None = Field(default=None, max_length=100)
    sort_by: Literal["createdAt", "updatedAt"] = "createdAt"
    sort_order: Literal["asc", "desc"] = "desc"
    # Extension: the opaque nextCursor of the previous page (newest first only), for deep pages.
    cursor: str | None = Field(default=None, max_length=200)


def item_of(listed: ListedRequest, now: datetime) -> CertificateRequestItem:
    r = listed.request
    summary = None
    if r.status == "issued" and r.certificate_id is not None and listed.serial_number is not None \
            and listed.not_after is not None:
        summary = CertificateSummary(id=r.certificate_id, serial_number=listed.serial_number,
                                     status=certificate_status(listed.not_after, now, listed.revoked_at))
    return CertificateRequestItem(
        id=r.id, certificate_request_id=r.id, status=wire_status(r.status), common_name=listed.common_name,
        alt_names=list((r.attributes or {}).get("altNames") or []), profile_id=r.profile_id,
        profile_name=listed.profile_slug, ca_id=listed.ca_id,
        certificate_id=r.certificate_id if r.status == "issued" else None, error_message=r.error_message,
        created_at=r.created_at, updated_at=r.updated_at, certificate=summary)


def encode_cursor(row: RequestRow) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, ident = raw.split("|")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is not None:
            created_at.astimezone(UTC)  # an offset pushing it past years 1-9999: the database refuses it
        return created_at, UUID(ident)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise BadRequest("invalid cursor", [FieldError("cursor", "not a cursor this API returned")]) from None
