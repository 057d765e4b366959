"""Machine identity login, and the identities of a project (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from aiohttp import web
from pydantic import Field

from api.body import parse, path_uuid
from api.context import DB, IDENTITY, RATE_LIMITER, SETTINGS
from api.routing import Routes
from shared import access
from shared.camel import CamelModel
from shared.db.identities import Identity

routes = Routes("auth")
LOGIN_PATH = "/api/v1/auth/universal-auth/login"


class LoginBody(CamelModel):
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: str = Field(min_length=1, max_length=500)


class LoginResult(CamelModel):
    access_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105  (a scheme name, not a secret)


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


def actor(request: web.Request) -> str:
    return f"identity:{current_identity(request).id}"


@routes.route("POST", LOGIN_PATH, summary="Exchange client credentials for a token",
              body=LoginBody, response=LoginResult, public=True)
async def login(request: web.Request) -> web.Response:
    # The source's login limit was taken by the rate limit middleware, before the body was read.
    body = await parse(request, LoginBody)
    limiter = request.app[RATE_LIMITER]
    await limiter.login_begins(body.client_id)  # counted as a failure until it succeeds
    result = await access.login(request.app[DB], body.client_id, body.client_secret,
                                request.app[SETTINGS].token_ttl_seconds)
    await limiter.login_succeeded(body.client_id)
    return web.json_response(LoginResult(access_token=result.access_token, expires_in=result.expires_in).to_json())


@routes.route("POST", "/api/v1/projects/{projectId}/identities", summary="Create a machine identity",
              body=CreateIdentityBody, response=CreatedIdentity, status=201)
async def create_identity(request: web.Request) -> web.Response:
    project_id = path_uuid(request, "projectId")
    access.authorize(current_identity(request), project_id, "admin")
    body = await parse(request, CreateIdentityBody)
    new = await access.create_identity(request.app[DB], project_id=project_id, name=body.name,
                                       role=body.role, actor=actor(request))
    view = CreatedIdentity(**IdentityView.of(new.identity).model_dump(), client_secret=new.client_secret)
    return web.json_response(view.to_json(), status=201)


@routes.route("GET", "/api/v1/projects/{projectId}/identities", summary="List machine identities",
              response=IdentityList)
async def list_identities(request: web.Request) -> web.Response:
    project_id = path_uuid(request, "projectId")
    access.authorize(current_identity(request), project_id, "admin")
    items = await access.list_identities(request.app[DB], project_id)
    return web.json_response(IdentityList(items=[IdentityView.of(i) for i in items]).to_json())


@routes.route("DELETE", "/api/v1/projects/{projectId}/identities/{identityId}",
              summary="Delete a machine identity; its tokens stop working at once", status=204)
async def delete_identity(request: web.Request) -> web.Response:
    project_id = path_uuid(request, "projectId")
    access.authorize(current_identity(request), project_id, "admin")
    identity_id = path_uuid(request, "identityId")
    await access.delete_identity(request.app[DB], project_id=project_id, identity_id=identity_id,
                                 actor=actor(request))
    return web.Response(status=204)
