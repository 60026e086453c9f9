"""Admin logins, throttled with django-axes (issue 11).

Axes' backend refuses any authenticate() call made without a request, which is how Django's test client,
the shell and scripts log in: none of them is the admin login form, the only login this site has, so this
backend lets them through untouched (AXES_ONLY_ADMIN_SITE does the same for requests to other paths)."""

from axes.backends import AxesStandaloneBackend


class AdminLoginThrottle(AxesStandaloneBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
