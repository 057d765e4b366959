"""Bulk batches (extension): ``/api/v1/cert-manager/certificate-batches``.

``handlers`` holds the routes, ``schemas`` the HTTP request and response models beside them.
"""

from api.batches.handlers import routes

__all__ = ["routes"]
