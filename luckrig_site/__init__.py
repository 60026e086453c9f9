"""The Django project of the LuckRig tracker: settings, URL map, ASGI/WSGI entry points and the
cross-cutting HTTP plumbing (error shape, body limits, client IP). It holds no domain models."""
