"""The HTTP models of ``/api/v1/cert-manager/ca/acme`` (DESIGN.md 5.3 and 9).

In: ``{projectId, name, status, configuration: {directoryUrl, accountEmail, eabKid?, eabHmacKey?,
dnsProviderConfig?{provider: rfc2136, nameserver, port, zone, tsigKeyName, tsigAlgorithm, tsigSecret},
caBundle?}}``. Out: the CA bare, as upstream answers CA routes, its secrets never (the EAB HMAC key and
the TSIG secret are write-only).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from cryptography import x509
from pydantic import AfterValidator, Field, RootModel, StringConstraints, model_validator

from api.authorities.schemas import CA_NAME_PATTERN, wire_status
from shared.camel import CamelModel
from shared.db.authorities import Authority
from shared.db.external import AcmeAccount

MAX_BUNDLE_BYTES = 64 * 1024


def _https(url: str) -> str:
    if not url.startswith("https://") or len(url) < 12:
        raise ValueError("an ACME directory URL starts with https://")
    return url


def _pem_bundle(pem: str) -> str:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise ValueError("not PEM certificates") from None
    if not certs:
        raise ValueError("no certificate in the bundle")
    return pem


def _base64(secret: str) -> str:
    text = secret.strip()
    try:
        base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                         validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("base64 (or base64url) expected") from None
    return text


DirectoryUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_https)]
CaBundle = Annotated[str, StringConstraints(max_length=MAX_BUNDLE_BYTES), AfterValidator(_pem_bundle)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_base64)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
DnsName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+\.?$")]


class DnsProviderConfig(CamelModel):
    """dns-01 through RFC 2136 dynamic updates signed with TSIG (the only provider protocol so far)."""

    provider: Literal["rfc2136"]
    nameserver: DnsName
    port: int = Field(default=53, ge=1, le=65535)
    zone: DnsName
    tsig_key_name: DnsName
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"] = "hmac-sha256"
    tsig_secret: Secret

    def stored(self) -> dict[str, Any]:
        """What is kept in the clear (the secret is sealed apart)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"tsig_secret"})


class AcmeConfigurationBody(CamelModel):
    directory_url: DirectoryUrl
    account_email: Email
    eab_kid: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    eab_hmac_key: Secret | None = None
    dns_provider_config: DnsProviderConfig | None = None
    ca_bundle: CaBundle | None = None  # extension: PEM certificates to trust for the directory's TLS

    @model_validator(mode="after")
    def _eab(self) -> AcmeConfigurationBody:
        if (self.eab_kid is None) != (self.eab_hmac_key is None):
            raise ValueError("give both eabKid and eabHmacKey, or neither")
        return self

    def secrets(self) -> dict[str, str]:
        out = {}
        if self.eab_hmac_key is not None:
            out["eabHmacKey"] = self.eab_hmac_key
        if self.dns_provider_config is not None:
            out["tsigSecret"] = self.dns_provider_config.tsig_secret
        return out


class CreateAcmeCaBody(CamelModel):
    project_id: UUID
    name: str = Field(min_length=1, max_length=100, pattern=CA_NAME_PATTERN)
    status: Literal["active", "disabled"] = "active"
    configuration: AcmeConfigurationBody


class DnsProviderView(CamelModel):
    provider: str
    nameserver: str | None = None
    port: int | None = None
    zone: str | None = None
    tsig_key_name: str | None = None
    tsig_algorithm: str | None = None


class AcmeConfigurationView(CamelModel):
    directory_url: str
    account_email: str
    eab_kid: str | None
    dns_provider_config: DnsProviderView | None
    ca_bundle: str | None
    account_url: str | None  # extension: the upstream account, once a worker has registered it


class AcmeCaView(CamelModel):
    id: UUID
    project_id: UUID
    type: Literal["acme"]
    name: str
    status: str  # active | disabled | pending-certificate (the account is being registered) | failed
    configuration: AcmeConfigurationView
    error_message: str | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, ca: Authority, account: AcmeAccount) -> AcmeCaView:
        dns = DnsProviderView.model_validate(account.dns_provider) if account.dns_provider else None
        configuration = AcmeConfigurationView(
            directory_url=account.directory_url, account_email=account.account_email, eab_kid=account.eab_kid,
            dns_provider_config=dns, ca_bundle=account.ca_bundle, account_url=account.account_url)
        return cls(id=ca.id, project_id=ca.project_id, type="acme", name=ca.name, status=wire_status(ca.status),
                   configuration=configuration, error_message=ca.error_message, created_at=ca.created_at,
                   updated_at=ca.updated_at)


class AcmeCaList(RootModel[list[AcmeCaView]]):
    """A project's ACME CAs: a bare array, as upstream answers it."""

    def to_json(self) -> list[object]:
        out: list[object] = self.model_dump(mode="json", by_alias=True)
        return out
