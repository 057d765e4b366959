"""Response models of the PKI-file routes."""

from __future__ import annotations

from uuid import UUID

from pydantic import RootModel

from shared.camel import CamelModel


class CrlItem(CamelModel):
    id: UUID  # the CRL id of the public URLs: the CA's id (one current CRL per CA)
    crl: str  # PEM


class CrlList(RootModel[list[CrlItem]]):
    """``GET /ca/internal/{caId}/crls``: a bare array, as upstream's CA routes answer."""
