"""The routes of certificate policies and certificate profiles (admin writes, viewer reads)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from aiohttp import web

from api.auth import current_identity
from api.body import parse, path_uuid, query_uuid, storable
from api.context import DB
from api.profiles import schemas
from api.routing import Routes
from shared import access
from shared import profiles as svc
from shared.db import audit
from shared.db import policies as db
from shared.db.policies import PolicyRow, ProfileRow
from shared.errors import Conflict, NotFound

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


def _json(view: Any, status: int = 200) -> web.Response:
    return web.json_response(view.to_json() if hasattr(view, "to_json") else
                             view.model_dump(mode="json", by_alias=True), status=status)


# -- policies -------------------------------------------------------------------------------------

@routes.route("POST", POLICIES, summary="Create a certificate policy", body=schemas.CreatePolicyBody,
              response=schemas.PolicyView, status=201)
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
    return _json(schemas.PolicyView.of(row), 201)


@routes.route("GET", POLICIES, summary="List certificate policies", response=schemas.PolicyList,
              query={"projectId": "project"})
async def list_policies(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    rows = await db.list_policies(request.app[DB], project_id)
    return _json(schemas.PolicyList(items=[schemas.PolicyView.of(r) for r in rows]))


@routes.route("GET", POLICIES + "/{policyId}", summary="A certificate policy", response=schemas.PolicyView)
async def get_policy(request: web.Request) -> web.Response:
    return _json(schemas.PolicyView.of(await _policy(request, "viewer")))


@routes.route("PATCH", POLICIES + "/{policyId}", summary="Change a certificate policy",
              body=schemas.UpdatePolicyBody, response=schemas.PolicyView)
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
    return _json(schemas.PolicyView.of(row))


@routes.route("DELETE", POLICIES + "/{policyId}", summary="Delete an unused certificate policy", status=204)
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
    return web.Response(status=204)


# -- profiles -------------------------------------------------------------------------------------

@routes.route("POST", PROFILES, summary="Create a certificate profile", body=schemas.CreateProfileBody,
              response=schemas.ProfileView, status=201)
async def create_profile(request: web.Request) -> web.Response:
    body = await parse(request, schemas.CreateProfileBody)
    access.authorize(current_identity(request), body.project_id, "admin")
    async with request.app[DB].acquire() as conn, conn.transaction():
        await svc.check_profile_links(conn, body.project_id, body.issuer_type, body.ca_id,
                                      body.certificate_policy_id)
        row = await db.insert_profile(
            conn, project_id=body.project_id, slug=body.slug, description=body.description,
            issuer_type=body.issuer_type, ca_id=body.ca_id, certificate_policy_id=body.certificate_policy_id,
            enrollment_type=body.enrollment_type, api_config=body.api_config.model_dump(mode="json", by_alias=True),
            defaults=body.defaults.model_dump(mode="json", by_alias=True, exclude_none=True))
        if row is None:
            raise svc.slug_taken(body.slug)
        await audit.record(conn, project_id=body.project_id, actor=_actor(request), action="profile.create",
                           subject_type="profile", subject_id=str(row.id))
    return _json(schemas.ProfileView.of(row), 201)


@routes.route("GET", PROFILES, summary="List certificate profiles", response=schemas.ProfileList,
              query={"projectId": "project"})
async def list_profiles(request: web.Request) -> web.Response:
    project_id = query_uuid(request, "projectId")
    assert project_id is not None
    access.authorize(current_identity(request), project_id, "viewer")
    rows = await db.list_profiles(request.app[DB], project_id)
    return _json(schemas.ProfileList(items=[schemas.ProfileView.of(r) for r in rows]))


@routes.route("GET", PROFILES + "/slug/{slug}", summary="A certificate profile by slug",
              response=schemas.ProfileView, query={"projectId": "project (defaults to the caller's)"})
async def get_profile_by_slug(request: web.Request) -> web.Response:
    identity = current_identity(request)
    project_id: UUID = query_uuid(request, "projectId", required=False) or identity.project_id
    access.authorize(identity, project_id, "viewer")
    slug = request.match_info["slug"]
    # A NUL (or lone surrogate) cannot be in a stored slug, and PostgreSQL refuses it as a parameter.
    row = await db.get_profile_by_slug(request.app[DB], project_id, slug) if storable(slug) else None
    if row is None:
        raise NotFound("no such certificate profile")
    return _json(schemas.ProfileView.of(row))


@routes.route("GET", PROFILES + "/{profileId}", summary="A certificate profile", response=schemas.ProfileView)
async def get_profile(request: web.Request) -> web.Response:
    return _json(schemas.ProfileView.of(await _profile(request, "viewer")))


@routes.route("PATCH", PROFILES + "/{profileId}", summary="Change a certificate profile",
              body=schemas.UpdateProfileBody, response=schemas.ProfileView)
async def update_profile(request: web.Request) -> web.Response:
    current = await _profile(request, "admin")
    patch = await parse(request, schemas.UpdateProfileBody)
    given = patch.model_fields_set
    issuer_type = patch.issuer_type or current.issuer_type
    ca_id = patch.ca_id if "ca_id" in given else (current.ca_id if issuer_type == "ca" else None)
    policy_id = patch.certificate_policy_id or current.certificate_policy_id
    async with request.app[DB].acquire() as conn, conn.transaction():
        await svc.check_profile_links(conn, current.project_id, issuer_type, ca_id, policy_id)
        slug = patch.slug or current.slug
        row = await db.update_profile(
            conn, current.id, slug=slug,
            description=patch.description if patch.description is not None else current.description,
            issuer_type=issuer_type, ca_id=ca_id, certificate_policy_id=policy_id,
            api_config=patch.api_config.model_dump(mode="json", by_alias=True) if patch.api_config
            else current.api_config,
            defaults=patch.defaults.model_dump(mode="json", by_alias=True, exclude_none=True) if patch.defaults
            else current.defaults)
        if row is None:
            raise svc.slug_taken(slug)
        await audit.record(conn, project_id=row.project_id, actor=_actor(request), action="profile.update",
                           subject_type="profile", subject_id=str(row.id))
    return _json(schemas.ProfileView.of(row))


@routes.route("DELETE", PROFILES + "/{profileId}", summary="Delete a certificate profile", status=204)
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
    return web.Response(status=204)
