"""Applications: named groups of certificate profiles for the newer clients (admin writes, viewer reads).

``handlers`` holds the routes, ``schemas`` the HTTP request and response models beside them.
"""

from api.applications.handlers import routes

__all__ = ["routes"]
