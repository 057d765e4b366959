"""Issuance: ``/api/v1/cert-manager/certificates`` and its certificate requests.

``handlers`` holds the routes, ``schemas`` the HTTP request and response models beside them.
"""

from api.certificates.handlers import routes

__all__ = ["routes"]
