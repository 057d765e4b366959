"""Base model for the HTTP API's JSON: camelCase on the wire, snake_case in Python, unknown fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=False,
    )

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)
