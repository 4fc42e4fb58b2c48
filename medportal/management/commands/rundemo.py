"""Serve MedPortal with two django-q2 clusters beside it: the default one (imports, the job
reaper) and the ``gpu`` one (fine-tune jobs). Ctrl-C (or SIGTERM) stops all three."""

from __future__ import annotations

import contextlib
import os
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


def _stop(worker: subprocess.Popen, *, group: bool) -> None:
    """Stop a cluster: SIGTERM (an idle cluster stops at once, a busy one after its task),
    then SIGKILL after 15 s; ``group``: to its whole process group (a gpu worker may be busy
    with a job for hours; the reaper hands that job on the next time the demo runs)."""
    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
        else:
            worker.kill()
        worker.wait(timeout=15)


class Command(BaseCommand):
    help = "Run the web server (daphne, ASGI) and the django-q2 clusters (default and gpu) together, for the demo."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"]
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        worker = subprocess.Popen(manage, preexec_fn=preexec)
        self.stdout.write(f"django-q2 worker started (pid {worker.pid}).")
        gpu = subprocess.Popen(manage, env={**os.environ, "Q_CLUSTER_NAME": "gpu"}, preexec_fn=preexec, start_new_session=True)
        self.stdout.write(f"django-q2 gpu worker (fine-tune jobs) started (pid {gpu.pid}).")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        finally:
            _stop(gpu, group=True)
            _stop(worker, group=False)
