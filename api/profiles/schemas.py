"""The HTTP models of the certificate policy and profile routes: create and PATCH bodies, read models.

The policy rules themselves are ``shared.policy.rules.PolicyRules``; the bodies extend them with the
fields a stored policy or profile has around its rules.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator

from shared.camel import CamelModel
from shared.db.policies import PolicyRow, ProfileRow
from shared.errors import BadRequest, FieldError
from shared.policy.attributes import ApiConfig, ProfileDefaults
from shared.policy.rules import STORED, PolicyRules


def slugify(value: Any) -> Any:
    """Upstream stores a policy's name slugified: lower case, every run of other characters one hyphen."""
    if not isinstance(value, str):
        return value
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


Name = Annotated[str, Field(min_length=1, max_length=100)]
PolicyName = Annotated[str, BeforeValidator(slugify), Field(min_length=1, max_length=100,
                                                            pattern=r"^[a-z0-9][a-z0-9-]*$")]
Slug = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]

# jsonb keeps a number as ``numeric`` and gives back every one without a fraction as an integer
# (``1e30`` comes back as 1000000000000000000000000000000): past 64 bits such an integer can be neither
# written by the JSON encoder of our answers nor read by upstream's Go clients (int64), so the profile
# would answer 500 on every read from then on. Free-form JSON is therefore held to 64-bit numbers.
INT64_LIMIT = 2**63


def _numbers_within_64_bits(value: dict[str, Any]) -> dict[str, Any]:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool) and not -INT64_LIMIT <= item < INT64_LIMIT:
            raise ValueError(f"numbers must fit in 64 bits (-2^63 to 2^63 - 1), got {item!r}")
    return value


FreeFormJson = Annotated[dict[str, Any], AfterValidator(_numbers_within_64_bits)]


class CreatePolicyBody(PolicyRules):
    project_id: UUID
    name: PolicyName
    description: str = Field(default="", max_length=1000)


class UpdatePolicyBody(PolicyRules):
    """PATCH: the fields given replace the stored ones; the rest stay as they are."""

    name: PolicyName | None = None
    description: str | None = Field(default=None, max_length=1000)


class PolicyView(PolicyRules):
    id: UUID
    project_id: UUID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: PolicyRow) -> PolicyView:
        return cls.model_validate({**row.rules, "id": row.id, "projectId": row.project_id, "name": row.name,
                                   "description": row.description, "createdAt": row.created_at,
                                   "updatedAt": row.updated_at}, context=STORED)


class PolicyEnvelope(CamelModel):
    certificate_policy: PolicyView


class PolicyList(CamelModel):
    certificate_policies: list[PolicyView]
    total_count: int


def rules_json(rules: PolicyRules) -> dict[str, Any]:
    return PolicyRules.model_validate(rules.model_dump(include=set(PolicyRules.model_fields))) \
        .model_dump(mode="json", by_alias=True)


def merged_rules(row: PolicyRow, patch: UpdatePolicyBody) -> dict[str, Any]:
    given = patch.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"name", "description"})
    try:
        return PolicyRules.model_validate({**row.rules, **given}).model_dump(mode="json", by_alias=True)
    except ValidationError as exc:  # pragma: no cover - each part was validated already
        raise BadRequest("the merged policy is invalid", [FieldError("body", str(exc))]) from None


EnrollmentType = Literal["api", "acme", "est"]
IssuerType = Literal["ca", "self-signed"]
_CONFIG_OF = {"api": "api_config", "acme": "acme_config", "est": "est_config"}
_ALIAS = {"api_config": "apiConfig", "acme_config": "acmeConfig", "est_config": "estConfig"}


class AcmeConfig(CamelModel):
    skip_dns_ownership_verification: bool = False
    skip_eab_binding: bool = False


class EstConfig(CamelModel):
    """Stored for EST enrollment (served in a later issue); the passphrase is never read back."""

    disable_bootstrap_ca_validation: bool = False
    passphrase: str | None = Field(default=None, min_length=1, max_length=256)
    ca_chain: str | None = Field(default=None, max_length=100_000)


class EstConfigView(CamelModel):
    disable_bootstrap_ca_validation: bool = False
    has_passphrase: bool = False
    ca_chain: str | None = None


def enrollment_errors(enrollment_type: str, given: set[str]) -> list[str]:
    """Each enrollment type needs its own config and takes no other's (DESIGN.md 5.5)."""
    own = _CONFIG_OF[enrollment_type]
    problems = [f"{_ALIAS[other]} is not allowed for enrollmentType {enrollment_type}"
                for other in _CONFIG_OF.values() if other != own and other in given]
    if own not in given:
        problems.append(f"enrollmentType {enrollment_type} needs {_ALIAS[own]}")
    return problems


class CreateProfileBody(CamelModel):
    project_id: UUID
    slug: Slug
    description: str = Field(default="", max_length=1000)
    issuer_type: IssuerType
    ca_id: UUID | None = None
    certificate_policy_id: UUID
    enrollment_type: EnrollmentType = "api"
    api_config: ApiConfig | None = None
    acme_config: AcmeConfig | None = None
    est_config: EstConfig | None = None
    external_configs: FreeFormJson | None = None
    defaults: ProfileDefaults = Field(default_factory=ProfileDefaults)

    @model_validator(mode="after")
    def _configs_fit_the_enrollment_type(self) -> CreateProfileBody:
        given = {name for name in _CONFIG_OF.values() if getattr(self, name) is not None}
        problems = enrollment_errors(self.enrollment_type, given)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class UpdateProfileBody(CamelModel):
    """PATCH: the fields given replace the stored ones. The enrollment type stays; its config may change."""

    slug: Slug | None = None
    description: str | None = Field(default=None, max_length=1000)
    issuer_type: IssuerType | None = None
    ca_id: UUID | None = None
    certificate_policy_id: UUID | None = None
    api_config: ApiConfig | None = None
    acme_config: AcmeConfig | None = None
    est_config: EstConfig | None = None
    external_configs: FreeFormJson | None = None
    defaults: ProfileDefaults | None = None


def _dump(model: CamelModel | None) -> dict[str, Any] | None:
    return None if model is None else model.model_dump(mode="json", by_alias=True)


def _est_json(config: EstConfig | None) -> dict[str, Any] | None:
    """The EST config as stored: the passphrase only as a salted scrypt hash (EST verifies, never reads it)."""
    if config is None:
        return None
    stored = config.model_dump(mode="json", by_alias=True, exclude={"passphrase"})
    if config.passphrase is not None:
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(config.passphrase.encode(), salt=salt, n=2**14, r=8, p=1)
        stored["passphraseHash"] = f"scrypt${salt.hex()}${digest.hex()}"
    return stored


def configs_json(body: CreateProfileBody | UpdateProfileBody) -> dict[str, dict[str, Any] | None]:
    return {"api_config": _dump(body.api_config), "acme_config": _dump(body.acme_config),
            "est_config": _est_json(body.est_config)}


class ProfileView(CamelModel):
    id: UUID
    project_id: UUID
    slug: str
    description: str
    issuer_type: str
    ca_id: UUID | None
    certificate_policy_id: UUID
    enrollment_type: str
    api_config: ApiConfig | None
    acme_config: AcmeConfig | None
    est_config: EstConfigView | None
    external_configs: dict[str, Any] | None
    defaults: ProfileDefaults
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ProfileRow) -> ProfileView:
        est = row.est_config
        return cls(id=row.id, project_id=row.project_id, slug=row.slug, description=row.description,
                   issuer_type=row.issuer_type, ca_id=row.ca_id, certificate_policy_id=row.certificate_policy_id,
                   enrollment_type=row.enrollment_type,
                   api_config=ApiConfig.model_validate(row.api_config) if row.enrollment_type == "api" else None,
                   acme_config=AcmeConfig.model_validate(row.acme_config) if row.acme_config is not None else None,
                   est_config=None if est is None else EstConfigView(
                       disable_bootstrap_ca_validation=bool(est.get("disableBootstrapCaValidation")),
                       has_passphrase=est.get("passphraseHash") is not None, ca_chain=est.get("caChain")),
                   external_configs=row.external_configs,
                   defaults=ProfileDefaults.model_validate(row.defaults), created_at=row.created_at,
                   updated_at=row.updated_at)


class ProfileEnvelope(CamelModel):
    certificate_profile: ProfileView


class ProfileList(CamelModel):
    certificate_profiles: list[ProfileView]
    total_count: int


class ProfileCertificate(CamelModel):
    """A certificate of a profile, as the profile's certificate list shows it."""

    id: UUID
    project_id: UUID
    profile_id: UUID
    ca_id: UUID | None
    status: Literal["active", "revoked", "expired"]
    serial_number: str
    common_name: str | None
    key_algorithm: str
    not_before: datetime
    not_after: datetime
    renewed_from_certificate_id: UUID | None
    renewed_by_certificate_id: UUID | None
    created_at: datetime


class ProfileCertificateList(CamelModel):
    certificates: list[ProfileCertificate]
    total_count: int


class LatestBundle(CamelModel):
    """The newest active certificate of a profile with its chain (and its key, for the issuer role)."""

    certificate_id: UUID
    certificate: str
    certificate_chain: str
    issuing_ca_certificate: str | None
    private_key: str | None
    serial_number: str
    not_after: datetime


class EabSecret(CamelModel):
    """ACME external account binding credentials: ``eabKid`` is the profile id, ``eabSecret`` the HMAC key
    (base64url, as certbot's --eab-hmac-key and cert-manager take it)."""

    eab_kid: str
    eab_secret: str
