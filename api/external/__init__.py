"""External CAs: ``/api/v1/cert-manager/ca/acme`` (ACME CAs a worker obtains certificates from) and the
``/.well-known/acme-challenge/{token}`` route that answers their http-01 challenges.

``handlers`` holds the routes, ``schemas`` the HTTP request and response models beside them.
"""

from api.external.handlers import challenge_routes, routes

__all__ = ["challenge_routes", "routes"]
