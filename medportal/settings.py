"""MedPortal settings.

Every value that differs between machines comes from the environment and is parsed strictly
(environs raises on a malformed value instead of guessing). The defaults are the embedded
single-machine setup: SQLite, the django-q2 ORM broker and the in-memory channel layer.
Setting ``DATABASE_URL`` / ``REDIS_URL`` switches to PostgreSQL / Redis. docs/configuration.md
and the README list every variable.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.utils.translation import gettext_lazy as _
from csp.constants import NONCE, NONE, SELF
from environs import Env, validate

BASE_DIR = Path(__file__).resolve().parent.parent

# Torch on CPU (in-process chat and evaluation): OpenMP's default busy-wait makes threads of
# processes that share a few cores spin against each other (a training step measured 25x
# slower). Set before torch is imported; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

env = Env(eager=True, expand_vars=False)

DEV_SECRET_KEY = "medportal-insecure-development-key-do-not-use-in-production"

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATA_DIR = Path(env.path("MEDPORTAL_DATA_DIR", default=BASE_DIR / "var")).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)
(DATA_DIR / "staticfiles").mkdir(exist_ok=True)  # WhiteNoise warns about a missing root
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

REDIS_URL = env.str("REDIS_URL", default="") or None

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "channels",
    "axes",
    "csp",
    "medportal",
    "curation",
    "training",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "medportal.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A page that found no free database connection in the pool: 503, not 500 (medportal/db.py).
    "medportal.db.DatabaseBusyMiddleware",
    # Last: turns a sign-in refused by django-axes into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "medportal.urls"
WSGI_APPLICATION = "medportal.wsgi.application"
ASGI_APPLICATION = "medportal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "medportal.context_processors.roles",
                "csp.context_processors.nonce",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------
_SQLITE_URL = f"sqlite:///{DATA_DIR / 'medportal.sqlite3'}"
DATABASES = {"default": env.dj_db_url("DATABASE_URL", default=_SQLITE_URL, conn_max_age=0)}
# PostgreSQL: a bounded pool of connections per process (web, worker or command), none kept per
# thread. Under ASGI every request runs in a thread of its own, and a persistent connection
# (CONN_MAX_AGE > 0) stays with each thread: 50 concurrent requests left 51 connections open and
# the next burst failed with "too many clients" (docs/BENCHMARKS.md, bench/db_load.py). A request
# that waits longer than the timeout for a free connection is answered 503 (medportal/db.py).
# MEDPORTAL_DB_POOL_MAX=0: no pool, one connection per request closed after it (behind PgBouncer).
# Sizing against max_connections: docs/production.md.
MEDPORTAL_DB_POOL_MAX = env.int("MEDPORTAL_DB_POOL_MAX", default=10, validate=validate.Range(min=0, max=1000))
MEDPORTAL_DB_POOL_MIN = env.int("MEDPORTAL_DB_POOL_MIN", default=1, validate=validate.Range(min=0, max=1000))
MEDPORTAL_DB_POOL_TIMEOUT = env.float("MEDPORTAL_DB_POOL_TIMEOUT", default=10.0, validate=validate.Range(min=0.1, max=600))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and MEDPORTAL_DB_POOL_MAX:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(MEDPORTAL_DB_POOL_MIN, MEDPORTAL_DB_POOL_MAX),
        "max_size": MEDPORTAL_DB_POOL_MAX,
        "timeout": MEDPORTAL_DB_POOL_TIMEOUT,
    }
    # A pooled connection is checked before it is handed out (one round trip), so a connection
    # the server dropped (restart, idle timeout) is replaced instead of failing a request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the django-q2 worker writes; IMMEDIATE transactions
    # take the write lock up front so two writers queue instead of failing with "locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channels -------------------------------------------------------------------------------
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "medportal"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- cache (API throttling): shared through Redis when there is one ----------------------------
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "medportal"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "medportal"}}

# --- django-q2 ------------------------------------------------------------------------------
# timeout < retry, or a long task is handed to a second worker while the first still runs.
Q_CLUSTER = {
    "name": env.str("MEDPORTAL_Q_NAME", default="medportal"),
    "workers": env.int("MEDPORTAL_Q_WORKERS", default=2),
    "timeout": env.int("MEDPORTAL_Q_TIMEOUT", default=3600),
    "retry": env.int("MEDPORTAL_Q_TIMEOUT", default=3600) + 600,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 500,
    "label": "Task queue",
    # Fine-tunes and evaluations go to the `gpu` cluster: on a GPU host run
    # `Q_CLUSTER_NAME=gpu manage.py qcluster`. One job per GPU worker; the job's own
    # heartbeat (not the queue timeout) tells a dead worker from a long run.
    "ALT_CLUSTERS": {
        "gpu": {
            "workers": env.int("MEDPORTAL_GPU_WORKERS", default=1),
            "timeout": env.int("MEDPORTAL_GPU_TIMEOUT", default=7 * 24 * 3600),
            "retry": env.int("MEDPORTAL_GPU_TIMEOUT", default=7 * 24 * 3600) + 600,
            "max_attempts": 1,
            "recycle": 1,
        }
    },
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.5

# --- auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out account or address before the password is checked.
AUTHENTICATION_BACKENDS = ["medportal.auth.LockoutBackend", "django.contrib.auth.backends.ModelBackend"]
# Brute force: after MEDPORTAL_LOGIN_FAILURE_LIMIT failed sign-ins for one account, or from one
# address, further attempts (the right password included, API tokens too) are refused for
# MEDPORTAL_LOGIN_COOLOFF_MINUTES; a successful sign-in clears the count. medportal/auth.py.
AXES_FAILURE_LIMIT = env.int("MEDPORTAL_LOGIN_FAILURE_LIMIT", default=5, validate=validate.Range(min=1))
AXES_COOLOFF_TIME = timedelta(minutes=env.int("MEDPORTAL_LOGIN_COOLOFF_MINUTES", default=15, validate=validate.Range(min=1)))
AXES_LOCKOUT_PARAMETERS = "medportal.auth.lockout_parameters"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "medportal.auth.lockout_response"
AXES_CLIENT_IP_CALLABLE = "medportal.auth.client_ip"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- i18n -----------------------------------------------------------------------------------
LANGUAGE_CODE = env.str("MEDPORTAL_LANGUAGE", default="zh-hans", validate=validate.OneOf(["zh-hans", "en"]))
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Shanghai")
USE_I18N = True
USE_TZ = True

# --- static files ---------------------------------------------------------------------------
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- security -------------------------------------------------------------------------------
SESSION_COOKIE_SECURE = env.bool("MEDPORTAL_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("MEDPORTAL_SSL_REDIRECT", default=False)
MEDPORTAL_BEHIND_PROXY = env.bool("MEDPORTAL_BEHIND_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if MEDPORTAL_BEHIND_PROXY else None
# HSTS: browsers that saw the header refuse plain HTTP to this host for that long. Start small
# (e.g. 3600) and raise to a year once HTTPS works everywhere; docs/production.md.
SECURE_HSTS_SECONDS = env.int("MEDPORTAL_HSTS_SECONDS", default=0, validate=validate.Range(min=0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("MEDPORTAL_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("MEDPORTAL_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (django-csp; medportal/middleware.py adds the page's
# own ws(s):// origin to connect-src). Scripts only from our static files, or inline with the
# per-request nonce ({{ request.csp_nonce }}); no inline event handlers. Inline styles stay
# allowed: templates, Bootstrap and the API docs (ReDoc, Swagger UI) set style attributes, and a
# style cannot reach out because img-src/font-src/connect-src are 'self'.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "worker-src": [SELF],
        "frame-src": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
MEDPORTAL_UPLOAD_MAX_BYTES = env.int("MEDPORTAL_UPLOAD_MAX_MB", default=200) * 1024 * 1024

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # The token class first: an anonymous call is answered 401 with "WWW-Authenticate: Token"
    # (DRF reports the first class's header); the browser's session still works.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "medportal.auth.LockoutTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["medportal.roles.HasAnyRole"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "medportal.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"user": "600/min", "diagnose": env.str("MEDPORTAL_DIAGNOSE_RATE", default="30/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MedPortal API",
    "DESCRIPTION": "Medical QA curation, review, dataset versions and exports.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge from validator.swagger.io; templates/drf_spectacular/ load nothing from outside.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["medportal.roles.HasAnyRole"],
    "ENUM_NAME_OVERRIDES": {
        "QAPairStatusEnum": "curation.models.QAPair.Status",
        # Every kind of background work (imports, case generation, fine-tunes, evaluations,
        # merges, drafting) has the one lifecycle's status words.
        "JobStatusEnum": "medportal.jobs.JobStatus",
        # zh / en: a generated case's language and a judge prompt's language are one choice set.
        "LanguageEnum": "curation.rare.generator.LANGS",
    },
}

# --- MedPortal ------------------------------------------------------------------------------
MEDPORTAL_REVIEW_QUORUM = env.int("MEDPORTAL_REVIEW_QUORUM", default=1, validate=validate.Range(min=1, max=10))
# Files up to this size import inside the request; larger ones go to the django-q2 worker.
# --- training ---------------------------------------------------------------------------------
# Where fine-tune jobs write checkpoints, adapters and merged models (one folder per job).
MEDPORTAL_TRAINING_DIR = Path(env.path("MEDPORTAL_TRAINING_DIR", default=DATA_DIR / "training")).resolve()
# A running job whose heartbeat is older than this is taken for dead.
MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S = env.int("MEDPORTAL_JOB_HEARTBEAT_TIMEOUT_S", default=120, validate=validate.Range(min=5))
# What happens to a job whose worker died: "fail" (mark failed with the reason) or "requeue"
# (queue it again to resume from its last checkpoint).
MEDPORTAL_ON_WORKER_DEATH = env.str("MEDPORTAL_ON_WORKER_DEATH", default="requeue", validate=validate.OneOf(["fail", "requeue"]))
# Times a job may be re-queued after worker deaths before it is failed.
MEDPORTAL_JOB_MAX_ATTEMPTS = env.int("MEDPORTAL_JOB_MAX_ATTEMPTS", default=3, validate=validate.Range(min=1))

# --- inference ---------------------------------------------------------------------------------
# An OpenAI-compatible server (vLLM `vllm serve BASE --enable-lora --lora-modules job-N=…`, or
# `manage.py serve_model`); empty = generate in this process with transformers.
MEDPORTAL_INFERENCE_URL = env.str("MEDPORTAL_INFERENCE_URL", default="")
MEDPORTAL_INFERENCE_API_KEY = env.str("MEDPORTAL_INFERENCE_API_KEY", default="")
# In-process backend: memory bound of the model cache, and generations allowed at once.
MEDPORTAL_INFERENCE_CACHE_MB = env.int("MEDPORTAL_INFERENCE_CACHE_MB", default=8192, validate=validate.Range(min=16))
MEDPORTAL_INFERENCE_MAX_CONCURRENT = env.int("MEDPORTAL_INFERENCE_MAX_CONCURRENT", default=2, validate=validate.Range(min=1))
# Serving endpoints (admin → Serving endpoints): an endpoint marked external (a hosted API) is only
# used when this is on; every request to one is audited and identifiers are masked before it goes.
MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = env.bool("MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS", default=False)
# A server answering 429 is retried this many times, waiting its Retry-After when at most this long.
MEDPORTAL_INFERENCE_MAX_RETRIES = env.int("MEDPORTAL_INFERENCE_MAX_RETRIES", default=2, validate=validate.Range(min=0, max=10))
MEDPORTAL_INFERENCE_MAX_RETRY_WAIT_S = env.float("MEDPORTAL_INFERENCE_MAX_RETRY_WAIT_S", default=30.0, validate=validate.Range(min=0, max=600))

# Optional paraphrase of generated rare-disease vignettes: a registered base model (+ a job's adapter).
MEDPORTAL_REWRITE_MODEL = env.str("MEDPORTAL_REWRITE_MODEL", default="")
MEDPORTAL_REWRITE_JOB = env.int("MEDPORTAL_REWRITE_JOB", default=None, allow_none=True)
# Chat ratings shown on an evaluation report (training does not import chat: plugged in here).
MEDPORTAL_RATINGS_SUMMARY = "chat.selectors.rating_summary"
# Clinicians' chat ratings of the answers a judge scored (the judge–clinician agreement of a comparison).
MEDPORTAL_CHAT_ANSWER_RATINGS = "chat.selectors.answer_ratings"
# The inference layer the rewrite goes through (curation does not import training: plugged in here).
MEDPORTAL_REWRITE_PROVIDER = "training.runnables.rewrite_provider"
MEDPORTAL_REWRITE_MAX_NEW_TOKENS = env.int("MEDPORTAL_REWRITE_MAX_NEW_TOKENS", default=512, validate=validate.Range(min=16, max=4096))
# The models literature drafting may use (curation does not import training: plugged in here).
MEDPORTAL_DRAFT_PROVIDER = "training.draft_provider"

# /api/v1/diagnose/: the model it asks when the request names none (a registered base model name,
# optionally "NAME:JOB_ID" for an adapter); empty = the most recently succeeded adapter, else the first model.
MEDPORTAL_DIAGNOSE_MODEL = env.str("MEDPORTAL_DIAGNOSE_MODEL", default="")

# Arena leaderboard: a model gets a rank only from this many counted votes on; below it, it is
# listed as provisional ("not enough votes (n/10)") without a rank.
MEDPORTAL_ARENA_MIN_VOTES = env.int("MEDPORTAL_ARENA_MIN_VOTES", default=10, validate=validate.Range(min=1))

# Evaluation runs: concurrent requests to an OpenAI-compatible server, and answers streamed one at
# a time for the speed test (time to first token, latency per answer).
MEDPORTAL_EVAL_CONCURRENCY = env.int("MEDPORTAL_EVAL_CONCURRENCY", default=8, validate=validate.Range(min=1))
MEDPORTAL_EVAL_SPEED_SAMPLES = env.int("MEDPORTAL_EVAL_SPEED_SAMPLES", default=20, validate=validate.Range(min=0))

MEDPORTAL_IMPORT_INLINE_MAX_BYTES = env.int("MEDPORTAL_IMPORT_INLINE_MAX_KB", default=512) * 1024
# An XLSX (a ZIP archive) that unpacks to more than this is refused before it is parsed (ZIP bombs).
MEDPORTAL_IMPORT_MAX_INFLATED_BYTES = (
    env.int("MEDPORTAL_IMPORT_MAX_INFLATED_MB", default=512, validate=validate.Range(min=1)) * 1024 * 1024
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("MEDPORTAL_LOG_LEVEL", default="INFO")},
    # Django's own default gives the "django" logger a console handler of its own (DEBUG only) and
    # lets it propagate to the root's: every request line and warning was printed twice. One
    # handler, the root's.
    "loggers": {"jieba": {"level": "WARNING"}, "django": {"handlers": [], "level": "INFO", "propagate": True}},
}

APP_VERBOSE_NAME = _("MedPortal")
