"""CAs and policies: every role views them; admins create CAs and policies, disable and enable CAs, and
delete unused policies. Each change goes through the same shared functions and audit events as the API."""

from __future__ import annotations

import json
from typing import Any, Final, get_args

import asyncpg
from aiohttp import web

from api.authorities.schemas import CreateCaBody
from api.body import validate
from api.context import BROKER, DB
from api.profiles.schemas import CreatePolicyBody, rules_json
from api.web.base import Visit, choice, field_map, page, path_uuid, redirect
from api.web.summary import policy_sentences
from shared import tasks, users
from shared.authorities import record_ca
from shared.db import audit
from shared.db import authorities as authorities_db
from shared.db import policies as policies_db
from shared.errors import Conflict, FieldError, Forbidden, KmsError, NotFound, ValidationFailure
from shared.policy.attributes import KeyAlgorithmName
from shared.policy.rules import STORED, PolicyRules

KEY_ALGORITHMS: Final = list(get_args(KeyAlgorithmName))
CA_FIELDS: Final = {"name": "name", "configuration.commonName": "commonName", "configuration.ttl": "ttl",
                    "configuration.keyAlgorithm": "keyAlgorithm", "configuration.parentCaId": "parent",
                    "configuration": "type"}
POLICY_FIELDS: Final = {"name": "name", "description": "description", "rules": "rules"}
EXAMPLE_RULES: Final = json.dumps({
    "subject": [{"type": "common_name", "allowed": ["*.example.com"]}],
    "sans": [{"type": "dns_name", "allowed": ["*.example.com"]}],
    "validity": {"max": "90d"}}, indent=2)


def _need_admin(visit: Visit, what: str) -> None:
    if not visit.allows("admin"):
        raise Forbidden(f"{what} needs the admin role; you are {visit.me.role} in this project")


async def _cas_page(visit: Visit, *, status: int = 200, errors: dict[str, list[str]] | None = None
                    ) -> web.StreamResponse:
    cas = await authorities_db.list_for_project(visit.request.app[DB], visit.project_id)
    return visit.render("cas.html", status=status, cas=cas, errors=errors or {}, form=visit.form,
                        key_algorithms=KEY_ALGORITHMS, parents=[c for c in cas if c.status == "active"])


@page("GET", "/projects/{projectId}/cas", summary="A project's certificate authorities")
async def cas(visit: Visit) -> web.StreamResponse:
    return await _cas_page(visit)


@page("POST", "/projects/{projectId}/cas", summary="Create an internal root or intermediate CA (admins)")
async def create_ca(visit: Visit) -> web.StreamResponse:
    _need_admin(visit, "creating a CA")
    form = visit.form
    kind = form.get("type", "")
    configuration: dict[str, Any] = {"type": kind, "commonName": form.get("commonName", ""),
                                     "keyAlgorithm": form.get("keyAlgorithm", ""), "ttl": form.get("ttl", "")}
    if kind == "intermediate":
        configuration["parentCaId"] = form.get("parent") or None
    try:
        body = validate(CreateCaBody, {"projectId": str(visit.project_id), "name": form.get("name", ""),
                                       "configuration": configuration})
        async with visit.request.app[DB].acquire() as conn, conn.transaction():
            ca = await record_ca(conn, body.new_ca())
            await audit.record(conn, project_id=visit.project_id, actor=users.actor(visit.user), action="ca.request",
                               subject_type="ca", subject_id=str(ca.id), details={"type": ca.type})
    except KmsError as err:
        return await _cas_page(visit, status=err.status, errors=field_map(err.errors or [FieldError("", err.detail)],
                                                                          CA_FIELDS))
    # As the API: after the commit, best effort (the reconciler re-sends a CA left pending).
    await visit.request.app[BROKER].send_best_effort(tasks.CREATE_CA, [str(ca.id)])
    return redirect(visit.url("/cas"))


@page("POST", "/projects/{projectId}/cas/{caId}/status", summary="Disable or enable a CA (admins)")
async def set_ca_status(visit: Visit) -> web.StreamResponse:
    _need_admin(visit, "changing a CA's status")
    status = choice(visit.form, "status", ("active", "disabled"))
    ca = await authorities_db.get(visit.request.app[DB], path_uuid(visit, "caId"), visit.project_id)
    if ca is None:
        raise NotFound("no such CA in this project")
    async with visit.request.app[DB].acquire() as conn, conn.transaction():
        if await authorities_db.set_status(conn, ca.id, ca.project_id, status) is None:
            raise Conflict(f"the CA is {ca.status}; only an active or disabled CA can change status")
        await audit.record(conn, project_id=ca.project_id, actor=users.actor(visit.user), action=f"ca.{status}",
                           subject_type="ca", subject_id=str(ca.id))
    return redirect(visit.url("/cas"))


async def _policies_page(visit: Visit, *, status: int = 200, errors: dict[str, list[str]] | None = None
                         ) -> web.StreamResponse:
    rows, _ = await policies_db.list_policies(visit.request.app[DB], visit.project_id, limit=100)
    shown = [{"policy": row, "sentences": policy_sentences(PolicyRules.model_validate(row.rules, context=STORED))}
             for row in rows]
    return visit.render("policies.html", status=status, policies=shown, errors=errors or {}, form=visit.form,
                        example=EXAMPLE_RULES)


@page("GET", "/projects/{projectId}/policies", summary="A project's certificate policies, in words")
async def policies(visit: Visit) -> web.StreamResponse:
    return await _policies_page(visit)


@page("POST", "/projects/{projectId}/policies", summary="Create a certificate policy (admins)")
async def create_policy(visit: Visit) -> web.StreamResponse:
    _need_admin(visit, "creating a policy")
    form = visit.form
    try:
        try:
            rules = json.loads(form.get("rules", "") or "{}")
        except ValueError as exc:
            raise ValidationFailure("the rules are not JSON", [FieldError("rules", f"not JSON: {exc}")]) from None
        if not isinstance(rules, dict):
            raise ValidationFailure("the rules must be a JSON object", [FieldError("rules", "not an object")])
        body = validate(CreatePolicyBody, {**rules, "projectId": str(visit.project_id), "name": form.get("name", ""),
                                           "description": form.get("description", "")})
        async with visit.request.app[DB].acquire() as conn, conn.transaction():
            row = await policies_db.insert_policy(conn, project_id=visit.project_id, name=body.name,
                                                  description=body.description, rules=rules_json(body))
            if row is None:
                raise Conflict(f"a policy named {body.name!r} already exists in this project",
                               [FieldError("name", "in use")])
            await audit.record(conn, project_id=visit.project_id, actor=users.actor(visit.user),
                               action="policy.create", subject_type="policy", subject_id=str(row.id))
    except KmsError as err:
        fields = {**POLICY_FIELDS, **{name: "rules" for name in PolicyRules.model_fields}}
        fields.update({field.alias: "rules" for field in PolicyRules.model_fields.values() if field.alias})
        return await _policies_page(visit, status=err.status,
                                    errors=field_map(err.errors or [FieldError("", err.detail)], fields))
    return redirect(visit.url("/policies"))


@page("POST", "/projects/{projectId}/policies/{policyId}/delete",
      summary="Delete an unused certificate policy (admins)")
async def delete_policy(visit: Visit) -> web.StreamResponse:
    _need_admin(visit, "deleting a policy")
    policy_id = path_uuid(visit, "policyId")
    in_use = Conflict("the policy is used by a certificate profile; change or delete the profile first")
    async with visit.request.app[DB].acquire() as conn, conn.transaction():
        try:
            outcome = await policies_db.delete_policy(conn, policy_id, visit.project_id)
        except asyncpg.ForeignKeyViolationError:
            raise in_use from None
        if outcome == "in-use":
            raise in_use
        if outcome == "missing":
            raise NotFound("no such certificate policy in this project")
        await audit.record(conn, project_id=visit.project_id, actor=users.actor(visit.user), action="policy.delete",
                           subject_type="policy", subject_id=str(policy_id))
    return redirect(visit.url("/policies"))
