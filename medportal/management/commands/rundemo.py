"""Serve MedPortal and run a django-q2 worker beside it; Ctrl-C (or SIGTERM) stops both."""

from __future__ import annotations

import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import BaseCommand, call_command


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM if this process dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Command(BaseCommand):
    help = "Run the web server (daphne, ASGI) and a django-q2 cluster together, for the demo."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        worker = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"],
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.stdout.write(f"django-q2 worker started (pid {worker.pid}).")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
