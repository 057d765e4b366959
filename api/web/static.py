"""The UI's stylesheet and its one script, served by the app itself (the CSP allows only 'self')."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from api.routing import Endpoint
from api.web.base import HERE, routes, with_headers

TYPES: Final = {"app.css": "text/css", "live.js": "text/javascript"}
# Read once: a fixed, small set of files, so no path from a request ever reaches the file system.
FILES: Final = {name: (HERE / "static" / name).read_bytes() for name in TYPES}


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    response = web.Response(body=FILES[name], content_type=TYPES[name], charset="utf-8")
    response.headers["Cache-Control"] = "public, max-age=300"
    return with_headers(response)


routes.endpoints.append(Endpoint(method="GET", path="/static/{name}", summary="The web UI's stylesheet and script",
                                 handler=static_file, public=True, tag=routes.tag))
