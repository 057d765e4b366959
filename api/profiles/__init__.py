"""Certificate policies and certificate profiles (admin writes, viewer reads).

``handlers`` holds the routes, ``schemas`` the HTTP request and response models beside them.
"""

from api.profiles.handlers import routes

__all__ = ["routes"]
