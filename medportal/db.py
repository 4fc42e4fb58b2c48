"""The PostgreSQL connection pool at its edges: a request that found no free connection, and forks.

settings.py gives each process a bounded pool (``MEDPORTAL_DB_POOL_*``, Django's psycopg pool).
When every connection stays busy past ``MEDPORTAL_DB_POOL_TIMEOUT``, psycopg_pool raises
``PoolTimeout`` (Django wraps it in ``OperationalError``): the API answers it in the one JSON
error shape (medportal/errors.py), pages with a short 503 page (``DatabaseBusyMiddleware``),
both with ``Retry-After``, instead of a 500.

A pool is not fork-safe: its connections' sockets and its worker threads belong to the process
that opened it. django-q2 forks its worker processes from a parent that has used the database;
``forget_inherited_pools`` (registered with ``os.register_at_fork`` in ``MedportalConfig.ready``)
makes a forked child drop the pools it inherited, without closing them (that would end the
parent's connections), so the child opens its own on first use.
"""

from __future__ import annotations

import sys

from django.http import HttpResponse
from django.template import loader
from django.utils.translation import gettext_lazy as _

RETRY_AFTER_S = 5
BUSY_MESSAGE = _("The database is busy: every connection is in use. Please try again in a few seconds.")


def is_pool_exhausted(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what caused it) is the pool's timeout waiting for a free connection."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # no pool installed: SQLite, or PostgreSQL without the pool
        return False
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PoolTimeout):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class DatabaseBusyMiddleware:
    """A page whose view found no free database connection is answered 503 with Retry-After.

    The page is rendered without the request's context processors: they read the user and
    roles from the database, which is what was busy."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_pool_exhausted(exception):
            return None
        response = HttpResponse(loader.render_to_string("503.html", {"message": BUSY_MESSAGE}), status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response


def forget_inherited_pools() -> None:
    """In a forked child: drop the PostgreSQL pools inherited from the parent (see the module docstring)."""
    backend = sys.modules.get("django.db.backends.postgresql.base")
    if backend is not None:  # not imported: no pool exists
        backend.DatabaseWrapper._connection_pools.clear()
