"""Serve MedPortal and run a django-q2 worker beside it; Ctrl-C stops both."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings
from django.core.management import BaseCommand, call_command


class Command(BaseCommand):
    help = "Run the web server (daphne, ASGI) and a django-q2 cluster together, for the demo."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        worker = subprocess.Popen([sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"])
        self.stdout.write(f"django-q2 worker started (pid {worker.pid}).")
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
