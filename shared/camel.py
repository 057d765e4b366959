"""Base model for the HTTP API's JSON: camelCase on the wire, snake_case in Python.

Unknown fields are ignored, as upstream does (DESIGN.md 5.1): real clients send fields this version
does not know (``applicationId``, ``attributes.removeRootsFromChain``, ``metadata``, ...). Known fields
are validated strictly."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", str_strip_whitespace=False,
    )

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)
