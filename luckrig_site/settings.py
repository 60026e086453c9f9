"""LuckRig tracker settings: one file, every difference between a laptop and production comes from the
environment (12-factor). Defaults are for development: SQLite in data/, in-memory channel layer, local-memory
cache. `REDIS_URL` switches the channel layer and the cache to Redis; `DATABASE_URL` switches the database."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    """A setting from the environment, or from the file named by NAME_FILE (for secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)

# Without SECRET_KEY a random key is generated once into data/ so that a laptop needs no setup and no secret is
# ever committed. A system check (luckrig.E001) refuses this fallback when DEBUG is off.
SECRET_KEY = env_str("SECRET_KEY")
SECRET_KEY_FROM_ENV = bool(SECRET_KEY)
if not SECRET_KEY:
    _key_file = DATA_DIR / "dev_secret_key"
    if not _key_file.exists():
        _fd = os.open(_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(_fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", SITE_URL)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "nodes",
    "tracker",
    "moderation",
    "showcase",
    "luckrig_site.apps.SiteConfig",
]

MIDDLEWARE = [
    "luckrig_site.middleware.RequestMetricsMiddleware",
    "luckrig_site.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before common: the language comes from the switch's cookie, else the browser's
    # Accept-Language (English or Japanese).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "luckrig_site.middleware.ContentSecurityPolicyMiddleware",
    # Inside the CSP: under DEBUG a missing page is still the site's styled 404, not Django's technical one.
    "luckrig_site.middleware.SiteNotFoundMiddleware",
    # Last, as django-axes asks: turns a locked-out admin login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "luckrig_site.urls"
ASGI_APPLICATION = "luckrig_site.asgi.application"
WSGI_APPLICATION = "luckrig_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "showcase.context.site",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'luckrig.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the monitor write while Daphne reads; the timeout absorbs short write contention.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            # Take the write lock when a transaction starts: a deferred transaction that reads and then writes
            # fails with "database is locked" as soon as two run at once.
            "transaction_mode": "IMMEDIATE",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels_redis receives with a blocking BZPOPMIN of 5 s, and redis-py 8 gives every socket a 5 s
                # read timeout by default: an idle channel then raised TimeoutError every ~5 s (channels_redis
                # issue #422), which tore down agent links and made the queue fan-out report "stale" and
                # reload, and a message popped just as the client gave up could be lost. The read timeout must
                # outlast the blocking read; 15 s still notices a Redis that hangs.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}],
                "prefix": os.environ.get("REDIS_PREFIX", "luckrig"),
                # Left at their defaults, on purpose: `capacity` (100 messages per channel) and `expiry`
                # (60 s). The queue fan-out's one channel per process is read by a loop that only records the
                # newest snapshot (nodes/fanout.py), so it never holds more than a few messages.
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("REDIS_PREFIX", "luckrig"),
        },
        # The rate-limit counters: the same Redis (and the same keys as before), but each process counts on its
        # own, stricter, while Redis is unreachable (core/ratecache.py). Short timeouts: a limit check
        # must not hold a request while Redis hangs.
        "ratelimit": {
            "BACKEND": "core.ratecache.FallbackRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("REDIS_PREFIX", "luckrig"),
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    RATELIMIT_USE_CACHE = "ratelimit"
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "luckrig"}}
    RATELIMIT_USE_CACHE = "default"

# Admin logins are throttled by django-axes (luckrig_site/auth.py): after ADMIN_LOGIN_FAILURE_LIMIT failures
# for one username from one address (household: an IPv6 /64), that pair is locked for ADMIN_LOGIN_COOLOFF_MIN
# minutes, even with the right password; other people at that address and that person elsewhere are not.
# Attempts are kept in the database (works on SQLite and PostgreSQL, holds across processes, survives a Redis
# outage), under a stand-in address made from the keyed ip hash: never the address itself.
AUTHENTICATION_BACKENDS = [
    "luckrig_site.auth.AdminLoginThrottle",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_ONLY_ADMIN_SITE = True
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ADMIN_LOGIN_COOLOFF_MIN", 15))
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.clientip.pseudonymous_ip"
AXES_DISABLE_ACCESS_LOG = True  # no record of every successful login: nothing needs one
AXES_ENABLE_ACCESS_FAILURE_LOG = False
AXES_VERBOSE = False  # each failure is in the database already; no log line per attempt

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
# The original community is Japanese: the site speaks both, chosen by the browser with a switch.
LANGUAGES = [("en", "English"), ("ja", "日本語")]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "static"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve from the installed apps directly unless `collectstatic` was run for production (then set it off).
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)

# --- HTTP hardening: on unless DEBUG (check --deploy is clean with production variables) ---
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # /api/health and /metrics are probed over plain HTTP from inside the deployment.
    SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^metrics$"]

# Largest request body the tracker reads, in bytes (bigger → 413 body_too_large).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 64 * 1024)
# A published replay (POST /api/replays): up to 80,000 characters of text plus 8192 chunk times, in UTF-8.
API_REPLAY_MAX_BODY_BYTES = env_int("API_REPLAY_MAX_BODY_BYTES", 512 * 1024)
API_MAX_BODY_BYTES_BY_PATH = {"/api/replays": API_REPLAY_MAX_BODY_BYTES}
# A relay's heartbeat (up to 10,000 node ids) and reports (up to 500 entries), under /api/relays/.
API_RELAY_MAX_BODY_BYTES = env_int("API_RELAY_MAX_BODY_BYTES", 1024 * 1024)
API_MAX_BODY_BYTES_BY_PREFIX = {"/api/relays/": API_RELAY_MAX_BODY_BYTES}
# Django's own ceiling must admit the largest per-path limit; BodySizeLimitMiddleware holds every other path
# to API_MAX_BODY_BYTES before anything reads the body.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(
    API_MAX_BODY_BYTES, *API_MAX_BODY_BYTES_BY_PATH.values(), *API_MAX_BODY_BYTES_BY_PREFIX.values()
)

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.api_errors.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "core.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LuckRig tracker API",
    "DESCRIPTION": "The public registry of LuckRig rigs, tasting tokens and contributions. See docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "CryptoModeEnum": ["plain", "public-key"],
        "CircleRoleEnum": ["owner", "inviter", "member"],
        "InviteRoleEnum": ["member", "inviter"],
        "MembershipStatusEnum": ["active", "paused"],
        "NodeVisibilityEnum": ["public", "unlisted", "circle"],
        "PublishedVisibilityEnum": ["public", "unlisted"],
    },
}

# --- LuckRig ---
# Proxies whose X-Forwarded-For is believed (IPs or CIDRs). Empty: the socket peer is the client.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
# Let nodes and fingerprint checks point at private / loopback addresses (a laptop or a LAN demo).
ALLOW_PRIVATE_NODE_URLS = env_bool("ALLOW_PRIVATE_NODE_URLS", DEBUG)
TRACKER_SIGNING_KEY_FILE = os.environ.get("TRACKER_SIGNING_KEY_FILE", "")
# Key rotation: a key published (trusted by agents) before it starts signing, and retired keys that stay
# published until the last token they signed has expired. Comma-separated PEM files.
TRACKER_NEXT_SIGNING_KEY_FILE = os.environ.get("TRACKER_NEXT_SIGNING_KEY_FILE", "")
TRACKER_RETIRED_SIGNING_KEY_FILES = env_list("TRACKER_RETIRED_SIGNING_KEY_FILES")

HEARTBEAT_INTERVAL_SEC = env_int("HEARTBEAT_INTERVAL_SEC", 15)
MONITOR_INTERVAL_SEC = env_int("MONITOR_INTERVAL_SEC", 30)
MONITOR_CONCURRENCY = env_int("MONITOR_CONCURRENCY", 20)
MONITOR_PROBE_TIMEOUT_SEC = env_float("MONITOR_PROBE_TIMEOUT_SEC", 5.0)
MONITOR_FAILURES_BEFORE_DOWN = env_int("MONITOR_FAILURES_BEFORE_DOWN", 3)
HEALTH_RETENTION_DAYS = env_int("HEALTH_RETENTION_DAYS", 8)
# One health sample per node at most this often (probes run every MONITOR_INTERVAL_SEC regardless).
HEALTH_SAMPLE_INTERVAL_SEC = env_int("HEALTH_SAMPLE_INTERVAL_SEC", 300)

# Catalog models served by fewer listed live rigs than this are "wanted" (GET /api/models/wanted, nodes/wanted.py).
WANTED_MAX_RIGS = env_int("WANTED_MAX_RIGS", 3)

CONTRIBUTOR_THRESHOLD = env_float("CONTRIBUTOR_THRESHOLD", 1.0)
TOKEN_TTL_DEFAULT_SEC = env_int("TOKEN_TTL_DEFAULT_SEC", 900)
TOKEN_TTL_MIN_SEC = env_int("TOKEN_TTL_MIN_SEC", 60)
TOKEN_TTL_MAX_SEC = env_int("TOKEN_TTL_MAX_SEC", 3600)
# The tiers (tracker/tiers.py). A token holds MAX_REQUESTS requests of up to MAX_OUTPUT_TOKENS output tokens each
# (the JWT's max_output_tokens, the per-request cap that agents clamp max_tokens to); its whole output budget
# (the JWT's max_output_tokens_total) is the product, so that a promise of 3 requests is never spent by the first
# answer.
# Under DEBUG (`make run`) every request comes from 127.0.0.1: the per-address limits that protect a public tracker
# would lock a developer out of their own demo within one README tour. DEBUG's defaults are generous (an afternoon
# of trying); production's are unchanged, and the environment overrides either.
# (*_OUTPUT_TOKENS_PER_REQUEST named the per-request cap for a while; it is no longer read, and
# luckrig_site/checks.py warns when it is set: luckrig.W014.)
LIMITED_MAX_REQUESTS = env_int("LIMITED_MAX_REQUESTS", 20 if DEBUG else 3)
LIMITED_MAX_OUTPUT_TOKENS = env_int("LIMITED_MAX_OUTPUT_TOKENS", 256)
LIMITED_TOKENS_PER_DAY = env_int("LIMITED_TOKENS_PER_DAY", 500 if DEBUG else 5)
CONTRIBUTOR_MAX_REQUESTS = env_int("CONTRIBUTOR_MAX_REQUESTS", 30)
CONTRIBUTOR_MAX_OUTPUT_TOKENS = env_int("CONTRIBUTOR_MAX_OUTPUT_TOKENS", 2048)
CONTRIBUTOR_TOKENS_PER_DAY = env_int("CONTRIBUTOR_TOKENS_PER_DAY", 200)

# django-ratelimit rates ("N/s|m|h|d") per client IP.
RATE_CONTRIBUTOR_CREATE = os.environ.get("RATE_CONTRIBUTOR_CREATE", "100/d" if DEBUG else "5/d")  # DEBUG: see the tiers
RATE_TOKEN_CREATE = os.environ.get("RATE_TOKEN_CREATE", "30/m")
RATE_NODE_WRITE = os.environ.get("RATE_NODE_WRITE", "60/h")
RATE_FINGERPRINT_VERIFY = os.environ.get("RATE_FINGERPRINT_VERIFY", "30/h")
RATE_TIMING_UPLOAD = os.environ.get("RATE_TIMING_UPLOAD", "120/h")
RATE_ABUSE_REPORT = os.environ.get("RATE_ABUSE_REPORT", "10/d")
RATE_REPLAY_PUBLISH = os.environ.get("RATE_REPLAY_PUBLISH", "20/h")
# Per contributor (not per IP): circle invites made (POST /api/circles/<id>/invites).
RATE_CIRCLE_INVITE = os.environ.get("RATE_CIRCLE_INVITE", "20/h")
# Per node, what its agent may send (tracker/throttle.py): heartbeats, usage reports and moderation flags, over HTTP
# and the agent link alike. Validated at start-up like the per-IP rates.
RATE_AGENT_HEARTBEAT = os.environ.get("RATE_AGENT_HEARTBEAT", "5/5s")
RATE_AGENT_USAGE = os.environ.get("RATE_AGENT_USAGE", "10/10s")
RATE_AGENT_FLAG = os.environ.get("RATE_AGENT_FLAG", "30/30s")
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", True)
# How many tracker processes share the Redis counters. While Redis is unreachable each process counts alone,
# every request weighing this much, so that together they still allow no more than each limit.
RATELIMIT_FALLBACK_PROCESSES = env_int("RATELIMIT_FALLBACK_PROCESSES", 1)

# The node list's count (nodes/list_count.py): exact while at most this many rigs are listed; above, one count
# per filter combination is kept this long in the shared cache (0: always exact) and says `count_is_estimate`.
NODE_LIST_EXACT_COUNT_UP_TO = env_int("NODE_LIST_EXACT_COUNT_UP_TO", 2000)
NODE_LIST_COUNT_TTL_SEC = env_int("NODE_LIST_COUNT_TTL_SEC", 10)

ABUSE_CONTACT = os.environ.get("ABUSE_CONTACT", "abuse@luckrig.invalid")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
