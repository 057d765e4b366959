"""The ACME server (RFC 8555) of each profile with ``enrollmentType: acme`` (DESIGN.md 8).

Modules follow the RFC's resources: ``accounts`` (directory, nonces, accounts, key-change), ``orders``
(orders, authorizations, challenges, finalize, certificate), ``revocation`` (revoke-cert); ``jws``
verifies every request, ``eab`` the external account binding, ``schemas`` renders the resources with
``acme.messages``, ``problems`` the errors, ``server`` the route table and what every answer carries.
"""

from api.acme import accounts, orders, revocation
from api.acme.server import routes

__all__ = ["accounts", "orders", "revocation", "routes"]
