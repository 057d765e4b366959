"""The web UI (issue 15): server-rendered pages on the API's own origin, over the service's own layers.

The page modules register into one route table, ``routes`` (see ``api.web.base``).
"""

from api.web import account, authorities, batches, certificates, issuance, static
from api.web.base import routes

__all__ = ["account", "authorities", "batches", "certificates", "issuance", "routes", "static"]
