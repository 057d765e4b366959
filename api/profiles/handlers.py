"""The routes of certificate policies and certificate profiles (admin writes, viewer reads)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from api.auth import caller_project, current_identity
from api.body import parse, path_uuid, query_int, query_uuid, storable
from api.certificates.handlers import private_key_pem
from api.context import DB
from api.profiles import schemas
from api.render import json_response
from api.routing import Routes
from shared import access
from shared import profiles as svc
from shared.db import audit
from shared.db import policies as db
from shared.db.policies import PolicyRow, ProfileRow
from shared.db.requests import CertificateRow
from shared.errors import Conflict, FieldError, NotFound, ValidationFailure

routes = Routes("certificate policies and profiles")
POLICIES = "/api/v1/cert-manager/certificate-policies"
PROFILES = "/api/v1/cert-manager/certificate-profiles"


def _actor(request: web.Request) -> str:
    return f"identity:{current_identity(request).id}"


async def _policy(request: web.Request, role: str) -> PolicyRow:
    row = await db.get_policy(request.app[DB], path_uuid(request, "policyId"), current_identity(request).project_id)
    if row is None:
        raise NotFound("no such certificate policy")
    access.authorize(current_identity(request), row.project_id, role)
    return row


async def _profile(request: web.Request, role: str) -> ProfileRow:
    row = await db.get_profile(request.app[DB], path_uuid(request, "profileId"),
                               current_identity(request).project_id)
    if row is None:
        raise NotFound("no such certificate profile")
    access.authorize(current_identity(request), row.project_id, role)
    return row


PAGE_QUERY = {"offset": "skip this many (default 0)", "limit": "page size, 1-100 (default 20)",
              "search": "a substring of the name or description"}


def page(request: web.Request) -> tuple[int, int]:
    """``offset`` (default 0) and ``limit`` (1-100, default 20) of a list route (DESIGN.md 5.1)."""
    return (query_int(request, "offset", default=0, low=0, high=2**31 - 1),
            query_int(request, "limit", default=20, low=1, high=100))


def query_choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise ValidationFailure(f"query parameter {name} must be one of {', '.join(choices)}",
                                [FieldError(name, f"one of {', '.join(choices)}")])
    return value


def query_search(request: web.Request) -> str | None:
    value = request.query.get("search")
    if value is not None and (len(value) > 256 or not storable(value)):
        raise ValidationFailure("query parameter search is too long or not text",
                                [FieldError("search", "at most 256 characters of text")])
    return value or None


def _json(view: Any, status: int = 200) -> web.Response:
    return json_response(view.to_json() if hasattr(view, "to_json") else
                             view.model_dump(mode="json", by_alias=True), status=status)


# -- policies -------------------------------------------------------------------------------------

def _policy_json(row: PolicyRow, status: int = 200) -> web.Response:
    return _json(schemas.PolicyEnvelope(certificate_policy=schemas.PolicyView.of(row)), status)


@routes.route("POST", POLICIES, summary="Create a certificate policy", body=schemas.CreatePolicyBody,
              response=schemas.PolicyEnvelope, status=201)
async def create_policy(request: web.Request) -> web.Response:
    body = await parse(request, schemas.CreatePolicyBody)
    access.authorize(current_identity(request), body.project_id, "admin")
    async with request.app[DB].acquire() as conn, conn.transaction():
        row = await db.insert_policy(conn, project_id=body.project_id, name=body.name,
                                     description=body.description, rules=schemas.rules_json(body))
        if row is None:
            raise svc.name_taken(body.name)
        await audit.record(conn, project_id=body.project_id, actor=_actor(request), action="policy.create",
                           subject_type="policy", subject_id=str(row.id))
    return _policy_json(row, 201)


@routes.route("GET", POLICIES, summary="List certificate policies", response=schemas.PolicyList,
              query={"projectId": "project", **PAGE_QUERY})
async def list_policies(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    offset, limit = page(request)
    rows, total = await db.list_policies(request.app[DB], project_id, offset=offset, limit=limit,
                                         search=query_search(request))
    return _json(schemas.PolicyList(certificate_policies=[schemas.PolicyView.of(r) for r in rows],
                                    total_count=total))


@routes.route("GET", POLICIES + "/{policyId}", summary="A certificate policy", response=schemas.PolicyEnvelope)
async def get_policy(request: web.Request) -> web.Response:
    return _policy_json(await _policy(request, "viewer"))


@routes.route("PATCH", POLICIES + "/{policyId}", summary="Change a certificate policy",
              body=schemas.UpdatePolicyBody, response=schemas.PolicyEnvelope)
async def update_policy(request: web.Request) -> web.Response:
    current = await _policy(request, "admin")
    patch = await parse(request, schemas.UpdatePolicyBody)
    name = patch.name if patch.name is not None else current.name
    async with request.app[DB].acquire() as conn, conn.transaction():
        row = await db.update_policy(
            conn, current.id, name=name,
            description=patch.description if patch.description is not None else current.description,
            rules=schemas.merged_rules(current, patch))
        if row is None:
            raise svc.name_taken(name)
        await audit.record(conn, project_id=row.project_id, actor=_actor(request), action="policy.update",
                           subject_type="policy", subject_id=str(row.id))
    return _policy_json(row)


@routes.route("DELETE", POLICIES + "/{policyId}", summary="Delete an unused certificate policy",
              response=schemas.PolicyEnvelope)
async def delete_policy(request: web.Request) -> web.Response:
    current = await _policy(request, "admin")
    in_use = Conflict("the policy is used by a certificate profile; change or delete the profile first")
    async with request.app[DB].acquire() as conn, conn.transaction():
        try:
            outcome = await db.delete_policy(conn, current.id, current.project_id)
        except asyncpg.ForeignKeyViolationError:
            raise in_use from None  # a profile naming it was created at the same moment
        if outcome == "in-use":
            raise in_use
        if outcome == "missing":
            raise NotFound("no such certificate policy")
        await audit.record(conn, project_id=current.project_id, actor=_actor(request), action="policy.delete",
                           subject_type="policy", subject_id=str(current.id))
    return _policy_json(current)


# -- profiles -------------------------------------------------------------------------------------

def _profile_json(row: ProfileRow, status: int = 200) -> web.Response:
    return _json(schemas.ProfileEnvelope(certificate_profile=schemas.ProfileView.of(row)), status)


@routes.route("POST", PROFILES, summary="Create a certificate profile", body=schemas.CreateProfileBody,
              response=schemas.ProfileEnvelope, status=201)
async def create_profile(request: web.Request) -> web.Response:
    body = await parse(request, schemas.CreateProfileBody)
    access.authorize(current_identity(request), body.project_id, "admin")
    async with request.app[DB].acquire() as conn, conn.transaction():
        await svc.check_profile_links(conn, body.project_id, body.issuer_type, body.ca_id,
                                      body.certificate_policy_id)
        configs = schemas.configs_json(body)
        row = await db.insert_profile(
            conn, project_id=body.project_id, slug=body.slug, description=body.description,
            issuer_type=body.issuer_type, ca_id=body.ca_id, certificate_policy_id=body.certificate_policy_id,
            enrollment_type=body.enrollment_type, api_config=configs["api_config"] or {},
            acme_config=configs["acme_config"], est_config=configs["est_config"],
            external_configs=body.external_configs,
            defaults=body.defaults.model_dump(mode="json", by_alias=True, exclude_none=True))
        if row is None:
            raise svc.slug_taken(body.slug)
        await audit.record(conn, project_id=body.project_id, actor=_actor(request), action="profile.create",
                           subject_type="profile", subject_id=str(row.id))
    return _profile_json(row, 201)


@routes.route("GET", PROFILES, summary="List certificate profiles", response=schemas.ProfileList,
              query={"projectId": "project", **PAGE_QUERY, "enrollmentType": "api, acme or est",
                     "issuerType": "ca or self-signed", "caId": "profiles issuing from this CA"})
async def list_profiles(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    offset, limit = page(request)
    rows, total = await db.list_profiles(
        request.app[DB], project_id, offset=offset, limit=limit, search=query_search(request),
        enrollment_type=query_choice(request, "enrollmentType", ("api", "acme", "est")),
        issuer_type=query_choice(request, "issuerType", ("ca", "self-signed")),
        ca_id=query_uuid(request, "caId", required=False))
    return _json(schemas.ProfileList(certificate_profiles=[schemas.ProfileView.of(r) for r in rows],
                                     total_count=total))


@routes.route("GET", PROFILES + "/slug/{slug}", summary="A certificate profile by slug",
              response=schemas.ProfileEnvelope, query={"projectId": "project (defaults to the caller's)"})
async def get_profile_by_slug(request: web.Request) -> web.Response:
    project_id = caller_project(request)
    slug = request.match_info["slug"]
    # A NUL (or lone surrogate) cannot be in a stored slug, and PostgreSQL refuses it as a parameter.
    row = await db.get_profile_by_slug(request.app[DB], project_id, slug) if storable(slug) else None
    if row is None:
        raise NotFound("no such certificate profile")
    return _profile_json(row)


@routes.route("GET", PROFILES + "/{profileId}", summary="A certificate profile", response=schemas.ProfileEnvelope)
async def get_profile(request: web.Request) -> web.Response:
    return _profile_json(await _profile(request, "viewer"))


@routes.route("PATCH", PROFILES + "/{profileId}", summary="Change a certificate profile",
              body=schemas.UpdateProfileBody, response=schemas.ProfileEnvelope)
async def update_profile(request: web.Request) -> web.Response:
    current = await _profile(request, "admin")
    patch = await parse(request, schemas.UpdateProfileBody)
    given = patch.model_fields_set
    # The enrollment type stays; a config of another type is refused (its own may be left out).
    others = [p for p in schemas.enrollment_errors(current.enrollment_type, {
        name for name in ("api_config", "acme_config", "est_config") if getattr(patch, name) is not None})
        if "is not allowed" in p]
    if others:
        raise ValidationFailure("; ".join(others), [FieldError("body", p) for p in others])
    issuer_type = patch.issuer_type or current.issuer_type
    ca_id = patch.ca_id if "ca_id" in given else (current.ca_id if issuer_type == "ca" else None)
    policy_id = patch.certificate_policy_id or current.certificate_policy_id
    configs = schemas.configs_json(patch)
    async with request.app[DB].acquire() as conn, conn.transaction():
        await svc.check_profile_links(conn, current.project_id, issuer_type, ca_id, policy_id)
        slug = patch.slug or current.slug
        row = await db.update_profile(
            conn, current.id, slug=slug,
            description=patch.description if patch.description is not None else current.description,
            issuer_type=issuer_type, ca_id=ca_id, certificate_policy_id=policy_id,
            api_config=configs["api_config"] or current.api_config,
            acme_config=configs["acme_config"] or current.acme_config,
            est_config=configs["est_config"] or current.est_config,
            external_configs=patch.external_configs if "external_configs" in given else current.external_configs,
            defaults=patch.defaults.model_dump(mode="json", by_alias=True, exclude_none=True) if patch.defaults
            else current.defaults)
        if row is None:
            raise svc.slug_taken(slug)
        await audit.record(conn, project_id=row.project_id, actor=_actor(request), action="profile.update",
                           subject_type="profile", subject_id=str(row.id))
    return _profile_json(row)


@routes.route("DELETE", PROFILES + "/{profileId}", summary="Delete a certificate profile",
              response=schemas.ProfileEnvelope)
async def delete_profile(request: web.Request) -> web.Response:
    current = await _profile(request, "admin")
    async with request.app[DB].acquire() as conn, conn.transaction():
        try:
            deleted = await db.delete_profile(conn, current.id, current.project_id)
        except asyncpg.ForeignKeyViolationError:
            # Certificate requests, certificates or batches were made with it: they keep naming it.
            raise Conflict("the profile has certificate requests or certificates; it cannot be deleted") from None
        if not deleted:
            raise NotFound("no such certificate profile")
        await audit.record(conn, project_id=current.project_id, actor=_actor(request), action="profile.delete",
                           subject_type="profile", subject_id=str(current.id))
    return _profile_json(current)


def _certificate_view(cert: CertificateRow) -> schemas.ProfileCertificate:
    return schemas.ProfileCertificate(
        id=cert.id, project_id=cert.project_id, profile_id=cert.profile_id, ca_id=cert.ca_id,
        status="revoked" if cert.revoked_at is not None else "active" if cert.not_after > datetime.now(UTC)
        else "expired", serial_number=cert.serial_number,
        common_name=cert.common_name, key_algorithm=cert.key_algorithm, not_before=cert.not_before,
        not_after=cert.not_after, renewed_from_certificate_id=cert.renewed_from_id,
        renewed_by_certificate_id=cert.renewed_by_id, created_at=cert.created_at)


@routes.route("GET", PROFILES + "/{profileId}/certificates", summary="The certificates issued with a profile",
              response=schemas.ProfileCertificateList,
              query={"offset": PAGE_QUERY["offset"], "limit": PAGE_QUERY["limit"],
                     "status": "active, revoked or expired",
                     "search": "a substring of the common name or serial number"})
async def list_profile_certificates(request: web.Request) -> web.Response:
    profile = await _profile(request, "viewer")
    offset, limit = page(request)
    rows, total = await db.profile_certificates(
        request.app[DB], profile.id, offset=offset, limit=limit,
        status=query_choice(request, "status", ("active", "revoked", "expired")), search=query_search(request))
    return _json(schemas.ProfileCertificateList(certificates=[_certificate_view(c) for c in rows],
                                                total_count=total))


@routes.route("GET", PROFILES + "/{profileId}/certificates/latest-active-bundle",
              summary="The newest valid certificate of a profile with its chain (and key, for issuers)",
              response=schemas.LatestBundle)
async def latest_active_bundle(request: web.Request) -> web.Response:
    profile = await _profile(request, "viewer")
    identity = current_identity(request)
    async with request.app[DB].acquire() as conn:
        cert = await db.latest_active_certificate(conn, profile.id)
        if cert is None:
            raise NotFound("the profile has no active certificate")
        key = await private_key_pem(request, conn, identity, cert)
    return _json(schemas.LatestBundle(
        certificate_id=cert.id, certificate=cert.certificate_pem, certificate_chain=cert.chain_pem,
        issuing_ca_certificate=cert.issuing_ca_pem, private_key=key, serial_number=cert.serial_number,
        not_after=cert.not_after))
