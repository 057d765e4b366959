"""The web UI's list of a project's certificates: filters and keyset paging, fast however many rows.

No page counts its rows or skips by OFFSET: each page starts after the last row of the one before (its
sort key and id), so the tenth thousandth page costs what the first does. The newest-first order walks
``certificates_project_idx`` (project_id, created_at DESC); "expiring within N days" walks
``certificates_project_not_after_idx`` (migration 0019), soonest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Executor
from shared.db.requests import CHAIN_JOIN, CertificateRow, cert_columns

_COLS = cert_columns()

STATUSES = ("active", "revoked", "expired")
_STATUS_SQL = {
    "active": "revoked_at IS NULL AND not_after > now()",
    "revoked": "revoked_at IS NOT NULL",
    "expired": "revoked_at IS NULL AND not_after <= now()",
}


@dataclass(frozen=True)
class CertificateFilter:
    project_id: UUID
    status: str | None = None  # one of STATUSES
    profile_id: UUID | None = None
    expiring_within_days: int | None = None  # active, and not after within this many days (soonest first)


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this sort key (created_at, or not_after when expiring) and id."""

    key: datetime
    id: UUID


async def list_certificates(conn: Executor, f: CertificateFilter, *, limit: int, after: Cursor | None
                            ) -> tuple[list[CertificateRow], Cursor | None]:
    """One page, and the cursor of the next (None on the last page)."""
    where = ["project_id = $1", "deleted_at IS NULL"]  # a deleted certificate is hidden (migration 0010)
    args: list[Any] = [f.project_id]
    if f.status is not None:
        where.append(_STATUS_SQL[f.status])
    if f.profile_id is not None:
        args.append(f.profile_id)
        where.append(f"profile_id = ${len(args)}")
    expiring = f.expiring_within_days is not None
    if expiring:
        args.append(f.expiring_within_days)
        where.append("revoked_at IS NULL AND not_after > now()"
                     f" AND not_after <= now() + make_interval(days => ${len(args)}::int)")
    key, order = ("not_after", "ASC") if expiring else ("created_at", "DESC")
    if after is not None:
        args += [after.key, after.id]
        op = ">" if expiring else "<"
        where.append(f"({key}, id) {op} (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM certificates c{CHAIN_JOIN} WHERE {' AND '.join(where)}"
        f" ORDER BY {key} {order}, id {order} LIMIT ${len(args)}", *args)
    page = [CertificateRow(**{k: r[k] for k in CertificateRow.__dataclass_fields__}) for r in rows[:limit]]
    more = len(rows) > limit
    last = page[-1] if page and more else None
    return page, (Cursor(last.not_after if expiring else last.created_at, last.id) if last else None)
