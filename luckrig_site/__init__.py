"""The Django project of the LuckRig tracker: settings, the URL map, ASGI/WSGI entry points, the startup checks
and the middleware that wires the site together. It holds no domain models and no shared helpers (those live in
`core`): no app imports it."""
