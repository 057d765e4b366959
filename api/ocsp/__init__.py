"""The OCSP responder (RFC 6960, DESIGN.md 5.7 and 7): public, GET and POST, one per CA.

``handlers`` holds the routes; ``api.ocsp_responders`` the cache of each CA's delegated responder key.
"""

from api.ocsp.handlers import routes

__all__ = ["routes"]
