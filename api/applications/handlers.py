"""The routes of applications: create, list, find by name, and the profiles they group (DESIGN.md 5.5).

Tenancy as everywhere: another project's application or profile answers 404, like a missing one.
"""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from api.applications import schemas
from api.auth import caller_project, current_identity
from api.body import parse, path_uuid, storable
from api.context import DB
from api.profiles.handlers import page
from api.render import json_response
from api.routing import Routes
from shared import access
from shared.camel import CamelModel
from shared.db import Executor, audit
from shared.db import applications as db
from shared.db.applications import ApplicationRow
from shared.errors import Conflict, FieldError, NotFound

routes = Routes("applications")
APPLICATIONS = "/api/v1/cert-manager/applications"


def _json(model: CamelModel, status: int = 200) -> web.Response:
    return json_response(model.model_dump(mode="json", by_alias=True), status=status)


def _app_json(row: ApplicationRow, status: int = 200) -> web.Response:
    return _json(schemas.ApplicationEnvelope(application=schemas.ApplicationView.of(row)), status)


async def _application(request: web.Request, role: str) -> ApplicationRow:
    identity = current_identity(request)
    row = await db.get(request.app[DB], path_uuid(request, "applicationId"), identity.project_id)
    if row is None:
        raise NotFound("no such application")
    access.authorize(identity, row.project_id, role)
    return row


async def _check_profiles(conn: Executor, project_id: UUID, profile_ids: list[UUID]) -> None:
    missing = await db.missing_profiles(conn, project_id, profile_ids)
    if missing:
        raise NotFound("no such certificate profile", [FieldError("profileIds", f"no such profile: {p}")
                                                       for p in missing])


async def _profiles_json(conn: Executor, application_id: UUID) -> web.Response:
    links = await db.profiles(conn, application_id)
    return _json(schemas.ApplicationProfiles(profiles=[schemas.ApplicationProfileView.of(x) for x in links]))


@routes.route("POST", APPLICATIONS, summary="Create an application (a named group of profiles)",
              body=schemas.CreateApplicationBody, response=schemas.ApplicationEnvelope, status=201)
async def create_application(request: web.Request) -> web.Response:
    body = await parse(request, schemas.CreateApplicationBody)
    identity = current_identity(request)
    access.authorize(identity, body.project_id, "admin")
    profile_ids = list(dict.fromkeys(body.profile_ids))
    async with request.app[DB].acquire() as conn, conn.transaction():
        await _check_profiles(conn, body.project_id, profile_ids)
        row = await db.insert(conn, project_id=body.project_id, name=body.name, description=body.description)
        if row is None:
            raise Conflict(f"an application named {body.name!r} already exists in this project",
                           [FieldError("name", "in use")])
        await db.attach(conn, row.id, profile_ids)
        await audit.record(conn, project_id=row.project_id, actor=f"identity:{identity.id}",
                           action="application.create", subject_type="application", subject_id=str(row.id))
    return _app_json(row, 201)


@routes.route("GET", APPLICATIONS, summary="List applications", response=schemas.ApplicationList,
              query={"projectId": "project (defaults to the caller's)", "offset": "skip this many (default 0)",
                     "limit": "page size, 1-100 (default 20)"})
async def list_applications(request: web.Request) -> web.Response:
    project_id = caller_project(request)
    offset, limit = page(request)
    rows, total = await db.list_page(request.app[DB], project_id, offset=offset, limit=limit)
    return _json(schemas.ApplicationList(applications=[schemas.ApplicationView.of(r) for r in rows],
                                         total_count=total))


@routes.route("GET", APPLICATIONS + "/by-name/{name}", summary="An application by name",
              response=schemas.ApplicationEnvelope, query={"projectId": "project (defaults to the caller's)"})
async def get_application_by_name(request: web.Request) -> web.Response:
    project_id = caller_project(request)
    name = request.match_info["name"]
    row = await db.get_by_name(request.app[DB], project_id, name) if storable(name) else None
    if row is None:
        raise NotFound("no such application")
    return _app_json(row)


@routes.route("GET", APPLICATIONS + "/{applicationId}", summary="An application",
              response=schemas.ApplicationEnvelope)
async def get_application(request: web.Request) -> web.Response:
    return _app_json(await _application(request, "viewer"))


@routes.route("GET", APPLICATIONS + "/{applicationId}/profiles", summary="The profiles of an application",
              response=schemas.ApplicationProfiles)
async def list_application_profiles(request: web.Request) -> web.Response:
    app = await _application(request, "viewer")
    return await _profiles_json(request.app[DB], app.id)


@routes.route("POST", APPLICATIONS + "/{applicationId}/profiles", summary="Add profiles to an application",
              body=schemas.AttachProfilesBody, response=schemas.ApplicationProfiles)
async def attach_profiles(request: web.Request) -> web.Response:
    app = await _application(request, "admin")
    body = await parse(request, schemas.AttachProfilesBody)
    profile_ids = list(dict.fromkeys(body.profile_ids))
    identity = current_identity(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        await _check_profiles(conn, app.project_id, profile_ids)
        await db.attach(conn, app.id, profile_ids)
        await audit.record(conn, project_id=app.project_id, actor=f"identity:{identity.id}",
                           action="application.attach-profiles", subject_type="application", subject_id=str(app.id))
        return await _profiles_json(conn, app.id)


@routes.route("DELETE", APPLICATIONS + "/{applicationId}/profiles/{profileId}",
              summary="Remove a profile from an application", response=schemas.ApplicationProfiles)
async def detach_profile(request: web.Request) -> web.Response:
    app = await _application(request, "admin")
    profile_id = path_uuid(request, "profileId")
    identity = current_identity(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        if not await db.detach(conn, app.id, profile_id):
            raise NotFound("the profile is not in this application")
        await audit.record(conn, project_id=app.project_id, actor=f"identity:{identity.id}",
                           action="application.detach-profile", subject_type="application", subject_id=str(app.id))
        return await _profiles_json(conn, app.id)
