"""``manage.py rundemo`` (what ``make demo`` ends with), run as real processes.

Each log line is printed once, the start-up says how many workers each cluster runs, and Ctrl-C
(SIGINT to the terminal's process group, or to rundemo alone) stops the web server and both
django-q2 clusters with all their worker processes, as SIGTERM does: nothing is left behind —
also when rundemo was started with SIGINT ignored, as a background job of a script is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(
        {"DJANGO_SETTINGS_MODULE": "medportal.settings", "MEDPORTAL_DATA_DIR": str(data_dir), "DEBUG": "1", "PYTHONUNBUFFERED": "1"},
        **extra,
    )
    return env


def test_a_django_log_line_is_printed_once_with_debug_on(tmp_path):
    code = (
        "import logging, django\n"
        "django.setup()\n"
        "logging.getLogger('django.channels.server').info('HTTP GET /probe-request 200')\n"
        "logging.getLogger('django.request').warning('Not Found: /probe-missing')\n"
        "logging.getLogger('training.worker').info('probe-app-line')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    for line in ("HTTP GET /probe-request 200", "Not Found: /probe-missing", "probe-app-line"):
        assert output.count(line) == 1, output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(data_dir: Path) -> set[int]:
    """Live processes (not zombies) whose environment names this data dir: rundemo, and every
    process it started, even one re-parented after its parent died."""
    marker = f"MEDPORTAL_DATA_DIR={data_dir}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("rundemo")
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=_env(data_dir), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return data_dir


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("to_group", "times"),
    [(True, 2), (False, 1)],
    ids=["ctrl-c-twice-to-the-process-group", "sigint-to-rundemo-alone"],
)
def test_sigint_stops_the_server_and_both_clusters(migrated, to_group, times, tmp_path):
    port = _free_port()
    log = tmp_path / "rundemo.log"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "manage.py", "rundemo", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=_env(migrated, MEDPORTAL_LANGUAGE="en", MEDPORTAL_Q_WORKERS="2", MEDPORTAL_GPU_WORKERS="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job is
            # As `make demo &` or a script starts it: a background job of a non-interactive shell
            # inherits SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            text = log.read_text()
            # Serving, and both clusters report that they run.
            if text.count("[gpu]") and text.count("[medportal]") >= 1 and f"127.0.0.1:{port}" in text:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
            assert demo.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
        # The clusters' worker processes come up after their masters log: wait for them (a loaded
        # machine takes seconds), so that Ctrl-C does not arrive while they are still forking.
        deadline, before = time.monotonic() + 60, set()
        while (len(running := _processes_of(migrated)) < 6 or running != before) and time.monotonic() < deadline:
            before = running
            time.sleep(1)
        assert demo.pid in running and len(running) >= 6, text  # rundemo, 2 cluster masters and their processes
        assert "default cluster (imports, the job reaper): 2 workers" in text, text
        assert "gpu cluster (fine-tunes, evaluations): 1 worker," in text, text
        assert f"Serving on http://127.0.0.1:{port}/" in text, text

        for _ in range(times):  # an impatient user presses Ctrl-C again while it stops
            if to_group:
                os.killpg(demo.pid, signal.SIGINT)
            else:
                demo.send_signal(signal.SIGINT)
            time.sleep(0.3)
        demo.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _processes_of(migrated) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _processes_of(migrated)
        assert not left, f"left running: {left}\n{log.read_text()}"
    finally:
        for pid in _processes_of(migrated):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
