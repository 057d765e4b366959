"""Machine identity login and token renewal, projects by slug, and the identities of a project (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from aiohttp import web
from pydantic import Field

from api.body import parse, parse_json_or_form, path_uuid, query_uuid
from api.context import DB, IDENTITY, RATE_LIMITER, SETTINGS
from api.render import json_response
from api.routing import Routes
from shared import access
from shared.camel import CamelModel
from shared.db.identities import Identity

routes = Routes("auth")
LOGIN_PATH = "/api/v1/auth/universal-auth/login"
RENEW_PATH = "/api/v1/auth/token/renew"


class LoginBody(CamelModel):
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: str = Field(min_length=1, max_length=500)


class TokenRenewBody(CamelModel):
    access_token: str = Field(min_length=1, max_length=500)


class LoginResult(CamelModel):
    """Upstream's answer to a login and to a renewal (the SDKs and the KMS agent need every field)."""

    access_token: str
    expires_in: int = Field(description="Seconds until this token ends.")
    access_token_max_ttl: int = Field(
        alias="accessTokenMaxTTL", description="Seconds from the login past which no renewal extends the token.")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105  (a scheme name, not a secret)

    @classmethod
    def of(cls, result: access.Login) -> LoginResult:
        return cls(access_token=result.access_token, expires_in=result.expires_in,
                   access_token_max_ttl=result.max_ttl)


class ProjectView(CamelModel):
    id: UUID
    name: str
    slug: str


class CreateIdentityBody(CamelModel):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "issuer", "viewer"]


class IdentityView(CamelModel):
    identity_id: UUID
    project_id: UUID
    name: str
    role: str
    client_id: str
    created_at: datetime

    @classmethod
    def of(cls, identity: Identity) -> IdentityView:
        return cls(identity_id=identity.id, project_id=identity.project_id, name=identity.name,
                   role=identity.role, client_id=identity.client_id, created_at=identity.created_at)


class CreatedIdentity(IdentityView):
    client_secret: str = Field(description="Shown once; only its hash is stored.")


class IdentityList(CamelModel):
    items: list[IdentityView]


def current_identity(request: web.Request) -> Identity:
    identity: Identity = request[IDENTITY]
    return identity


def caller_project(request: web.Request, minimum_role: str = "viewer") -> UUID:
    """The ``projectId`` query parameter or, without one, the caller's own project (an identity belongs to
    one project: DESIGN.md 5.5), authorized for ``minimum_role``."""
    identity = current_identity(request)
    project_id = query_uuid(request, "projectId", required=False) or identity.project_id
    access.authorize(identity, project_id, minimum_role)
    return project_id


def actor(request: web.Request) -> str:
    return f"identity:{current_identity(request).id}"


@routes.route("POST", LOGIN_PATH, summary="Exchange client credentials for a token",
              body=LoginBody, response=LoginResult, public=True)
async def login(request: web.Request) -> web.Response:
    # The source's login limit was taken by the rate limit middleware, before the body was read.
    # Upstream's older clients (the cert-manager issuer v0.1.x) post the credentials form-encoded.
    body = await parse_json_or_form(request, LoginBody)
    limiter = request.app[RATE_LIMITER]
    await limiter.login_begins(body.client_id)  # counted as a failure until it succeeds
    settings = request.app[SETTINGS]
    result = await access.login(request.app[DB], body.client_id, body.client_secret,
                                settings.token_ttl_seconds, settings.token_max_ttl_seconds)
    await limiter.login_succeeded(body.client_id)
    return json_response(LoginResult.of(result).to_json())


# Public: the KMS agent renews from a fresh client that sends the token in the body only (the Node SDK
# also sends it as a bearer header, which is then simply not needed).
@routes.route("POST", RENEW_PATH, summary="Extend an access token, never past its login's accessTokenMaxTTL",
              body=TokenRenewBody, response=LoginResult, public=True)
async def renew_token(request: web.Request) -> web.Response:
    body = await parse(request, TokenRenewBody)
    result = await access.renew(request.app[DB], body.access_token, request.app[SETTINGS].token_ttl_seconds)
    return json_response(LoginResult.of(result).to_json())


@routes.route("GET", "/api/v1/projects/slug/{slug}", summary="The caller's project, by its slug",
              response=ProjectView)
async def project_by_slug(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    project = await access.project_by_slug(request.app[DB], current_identity(request), slug)
    return json_response(ProjectView(id=project.id, name=project.name, slug=project.slug).to_json())


@routes.route("POST", "/api/v1/projects/{projectId}/identities", summary="Create a machine identity",
              body=CreateIdentityBody, response=CreatedIdentity, status=201)
async def create_identity(request: web.Request) -> web.Response:
    project_id = path_uuid(request, "projectId")
    access.authorize(current_identity(request), project_id, "admin")
    body = await parse(request, CreateIdentityBody)
    new = await access.create_identity(request.app[DB], project_id=project_id, name=body.name,
                                       role=body.role, actor=actor(request))
    view = CreatedIdentity(**IdentityView.of(new.identity).model_dump(), client_secret=new.client_secret)
    return json_response(view.to_json(), status=201)


@routes.route("GET", "/api/v1/projects/{projectId}/identities", summary="List machine identities",
              response=IdentityList)
async def list_identities(request: web.Request) -> web.Response:
    project_id = path_uuid(request, "projectId")
    access.authorize(current_identity(request), project_id, "admin")
    items = await access.list_identities(request.app[DB], project_id)
    return json_response(IdentityList(items=[IdentityView.of(i) for i in items]).to_json())


@routes.route("DELETE", "/api/v1/projects/{projectId}/identities/{identityId}",
              summary="Delete a machine identity; its tokens stop working at once", status=204)
async def delete_identity(request: web.Request) -> web.Response:
    project_id = path_uuid(request, "projectId")
    access.authorize(current_identity(request), project_id, "admin")
    identity_id = path_uuid(request, "identityId")
    await access.delete_identity(request.app[DB], project_id=project_id, identity_id=identity_id,
                                 actor=actor(request))
    return web.Response(status=204)
