"""Public PKI files (DESIGN.md 5.7): CRLs and CA certificates, no auth, cacheable; and a CA's CRL list.

``handlers`` holds the routes, ``schemas`` the HTTP response models beside them.
"""

from api.pki_files.handlers import routes

__all__ = ["routes"]
