"""Serve MedPortal with two django-q2 clusters beside it: the default one (imports, the job
reaper; MEDPORTAL_Q_WORKERS workers) and the ``gpu`` one (fine-tunes and evaluations;
MEDPORTAL_GPU_WORKERS). It says how many workers each runs. Ctrl-C (SIGINT, to the whole
process group as a terminal sends it, or to this process alone) or SIGTERM stops all three,
with every worker process; a second Ctrl-C while they stop is ignored."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import BaseCommand, call_command
from django.utils.translation import gettext as _
from django.utils.translation import ngettext


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the worker gets SIGTERM if this process dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(worker: subprocess.Popen) -> None:
    """Stop a cluster: SIGTERM (an idle cluster stops at once, a busy one after its task),
    then SIGKILL to its whole process group after 15 s (a gpu worker may be busy with a job
    for hours; the reaper hands that job on the next time the demo runs). Its worker processes
    that outlive their master are killed with the group too."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=15)


class Command(BaseCommand):
    help = "Run the web server (daphne, ASGI) and the django-q2 clusters (default and gpu) together, for the demo."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"]
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        default_workers = settings.Q_CLUSTER["workers"]
        gpu_workers = settings.Q_CLUSTER["ALT_CLUSTERS"]["gpu"]["workers"]
        # Each cluster in its own session: a terminal's Ctrl-C (SIGINT to the foreground process
        # group, pressed twice by an impatient user) reaches only this process, which then stops
        # each cluster as a whole process group. A cluster that got the signals itself was cut
        # short while stopping and left its worker processes running.
        worker = subprocess.Popen(manage, preexec_fn=preexec, start_new_session=True)
        self.stdout.write(
            ngettext(
                "django-q2 default cluster (imports, the job reaper): %(n)d worker, pid %(pid)d.",
                "django-q2 default cluster (imports, the job reaper): %(n)d workers, pid %(pid)d.",
                default_workers,
            )
            % {"n": default_workers, "pid": worker.pid}
        )
        gpu = subprocess.Popen(manage, env={**os.environ, "Q_CLUSTER_NAME": "gpu"}, preexec_fn=preexec, start_new_session=True)
        self.stdout.write(
            ngettext(
                "django-q2 gpu cluster (fine-tunes, evaluations): %(n)d worker, pid %(pid)d.",
                "django-q2 gpu cluster (fine-tunes, evaluations): %(n)d workers, pid %(pid)d.",
                gpu_workers,
            )
            % {"n": gpu_workers, "pid": gpu.pid}
        )
        self.stdout.write(
            self.style.SUCCESS(_("Serving on http://%(host)s:%(port)d/ (Ctrl-C stops the server and both clusters).") % {"host": host, "port": port})
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the finally below
        # A process started in the background by a non-interactive shell (`make demo &`, a CI
        # script, nohup) inherits SIGINT *ignored*; Python then installs no KeyboardInterrupt and
        # Twisted (daphne) no SIGINT handler of its own, so Ctrl-C reached the clusters but not
        # the server. Restore the default so that SIGINT stops everything as SIGTERM does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        except KeyboardInterrupt:
            pass
        finally:
            # A second Ctrl-C (or a SIGTERM) while the clusters stop must not cut the stopping short
            # and leave them running: from here on both are ignored.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stdout.write(_("Stopping the django-q2 clusters …"))
            for cluster in (gpu, worker):
                if cluster.poll() is None:
                    cluster.terminate()
            _stop(gpu)
            _stop(worker)
