"""``manage.py serve_model`` as a real process: the OpenAI backend talks to it over HTTP.

Like the qcluster tests, the server process gets its own SQLite file database (migrated, a
superuser, the demo model registered through the command), so it never touches the test
database; it is always stopped at the end.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from training.inference import GenerationParams, InferenceError, ModelRef
from training.inference.local import LocalBackend
from training.inference.openai_http import OpenAIBackend

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "发烧三天应该怎么办？"}]


def test_the_openai_backend_gets_the_in_process_answer_from_serve_model(tmp_path, demo_model_dir):
    env = {**os.environ, "MEDPORTAL_DATA_DIR": str(tmp_path / "data"), "DJANGO_SUPERUSER_PASSWORD": "pw-root"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]

    def call(*args):
        done = subprocess.run([*manage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    call("migrate", "--noinput", "-v0")
    call("createsuperuser", "--noinput", "--username", "root", "--email", "root@example.org")
    call("register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--user", "root")

    bad = subprocess.run([*manage, "serve_model", "--model", "nope"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "No base model named 'nope' (registered: demo)" in bad.stderr

    server = subprocess.Popen(
        [*manage, "serve_model", "--model", "demo", "--port", "0", "--api-key", "k"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        assert ready, "serve_model printed nothing within 120 s"
        info = json.loads(server.stdout.readline())
        assert info["models"] == ["demo"] and info["url"].startswith("http://127.0.0.1:")
        client = OpenAIBackend(info["url"], api_key="k")
        assert client.models() == ["demo"]
        params = GenerationParams(max_new_tokens=16)
        remote = client.generate(ModelRef(base_path="", name="demo"), QUESTION, params)
        local = LocalBackend().generate(ModelRef(base_path=str(demo_model_dir)), QUESTION, params)
        assert remote == local and remote  # greedy: the same answer over HTTP as in process
        with pytest.raises(InferenceError, match="401"):
            OpenAIBackend(info["url"], api_key="wrong").generate(ModelRef(base_path="", name="demo"), QUESTION, params)
        client.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    assert server.returncode is not None

