"""Internal certificate authorities: ``/api/v1/cert-manager/ca/internal``.

``handlers`` holds the routes, ``schemas`` the HTTP request and response models beside them.
"""

from api.authorities.handlers import routes

__all__ = ["routes"]
