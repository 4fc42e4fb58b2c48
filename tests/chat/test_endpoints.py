"""Serving endpoints: faults against real local servers, runtime LoRA, two endpoints at once,
hosted models as contenders (labelled external, forbidden by a setting, audited, identifiers masked).

The model answers come from the demo model (in-process, ``OpenAIServer`` in a thread, or a real
``serve_model`` process); ``tests.inference_servers.HostedStandIn`` stands in for a hosted API.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync

from medportal.models import AuditEvent
from tests.inference_servers import ANSWER, HostedStandIn, free_port
from training.inference import GenerationParams, InferenceError, ModelRef, StreamStats
from training.inference.local import LocalBackend
from training.inference.openai_http import OpenAIBackend
from training.inference.server import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "头痛三天了怎么办？"}]
P = GenerationParams(max_new_tokens=8)
HOSTED = ModelRef(base_path="", name="gpt-4o")


# --------------------------------------------------------------------------- faults (backend)


def test_an_unreachable_endpoint_is_named():
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", label="gpu-1", connect_timeout_s=2)
    with pytest.raises(InferenceError, match="The inference server gpu-1 could not be reached"):
        backend.generate(HOSTED, QUESTION, P)


def test_a_wrong_key_names_the_variable_that_holds_it():
    with HostedStandIn(api_key="right") as srv:
        backend = OpenAIBackend(srv.url, api_key="wrong", key_hint="OPENAI_API_KEY", label="openai")
        with pytest.raises(InferenceError, match=r"refused the API key \(401\) \(check the environment variable OPENAI_API_KEY\): Incorrect API key"):
            backend.generate(HOSTED, QUESTION, P)
        assert srv.received[0]["auth"] == "Bearer wrong"


def test_an_unknown_model_is_a_404_naming_it():
    with HostedStandIn() as srv:
        with pytest.raises(InferenceError, match=r"does not serve the model 'gpt-5' \(404\)"):
            OpenAIBackend(srv.url).generate(ModelRef(base_path="", name="gpt-5"), QUESTION, P)


def test_429_waits_retry_after_and_retries_within_the_bound():
    with HostedStandIn(mode="429", retry_after="0.3", limit_times=2) as srv:
        t0 = time.perf_counter()
        text = OpenAIBackend(srv.url, max_retries=2).generate(HOSTED, QUESTION, P)
        assert text == "".join(ANSWER) and srv.rate_limited == 2
        assert time.perf_counter() - t0 >= 0.6  # waited Retry-After twice


def test_429_beyond_the_bound_fails_at_once_and_endless_429_gives_up():
    with HostedStandIn(mode="429", retry_after="120", limit_times=5) as srv:
        t0 = time.perf_counter()
        with pytest.raises(InferenceError, match=r"rate limiting requests \(429\) and asked to wait longer"):
            OpenAIBackend(srv.url, max_retries=2, max_retry_wait_s=5).generate(HOSTED, QUESTION, P)
        assert time.perf_counter() - t0 < 3 and srv.rate_limited == 1
    with HostedStandIn(mode="429", retry_after="0", limit_times=10) as srv:
        with pytest.raises(InferenceError, match=r"still rate limiting \(429\) after 3 tries"):
            OpenAIBackend(srv.url, max_retries=2).generate(HOSTED, QUESTION, P)
        assert srv.rate_limited == 3


def test_a_slow_endpoint_times_out_with_the_limit_named():
    with HostedStandIn(mode="slow", delay_s=2.0) as srv:
        with pytest.raises(InferenceError, match=r"did not answer within 0.5 s"):
            OpenAIBackend(srv.url, timeout_s=0.5).generate(HOSTED, QUESTION, P)


@pytest.mark.parametrize(("mode", "message"), [("malformed", "sent an unreadable event"), ("cut", "ended the answer before it was complete")])
def test_a_malformed_or_cut_stream_is_an_error_not_a_short_answer(mode, message):
    with HostedStandIn(mode=mode) as srv:
        pieces = []
        with pytest.raises(InferenceError, match=message):
            for piece in OpenAIBackend(srv.url).stream(HOSTED, QUESTION, P):
                pieces.append(piece)
        assert pieces == [ANSWER[0]]  # what came before the fault; callers drop it


def test_nul_characters_in_model_output_are_dropped_by_the_inference_layer():
    """No database column can hold NUL (PostgreSQL refuses it): a chat answer, an arena side or
    an evaluation prediction holding one was lost at the INSERT. The layer every caller reads
    through drops it, and closing the stream still closes the backend's."""
    with HostedStandIn(mode="nul") as srv:
        backend = OpenAIBackend(srv.url)
        pieces = list(backend.stream(HOSTED, QUESTION, P))
        assert pieces == ANSWER and "\x00" not in "".join(pieces)
        assert backend.generate(HOSTED, QUESTION, P) == "".join(ANSWER)

    closed = []

    class Pieces(OpenAIBackend):
        def _stream_messages(self, model, messages, params, cancel, stats):
            try:
                yield "a\x00"
                yield "b"
            finally:
                closed.append(True)

    stream = Pieces("http://127.0.0.1:9/v1").stream(HOSTED, QUESTION, P)
    assert next(stream) == "a"
    stream.close()
    assert closed == [True]


def test_the_concurrency_limit_makes_the_next_request_wait():
    with HostedStandIn(mode="slow", delay_s=0.8) as srv:
        backend = OpenAIBackend(srv.url, max_concurrent=1)
        stats = [StreamStats(), StreamStats()]
        threads = [threading.Thread(target=lambda s=s: backend.generate(HOSTED, QUESTION, P, stats=s)) for s in stats]
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join(10)
        assert max(s.waited_s for s in stats) >= 0.5


# --------------------------------------------------------------------------- runtime LoRA


@pytest.fixture
def lora_server(demo_model_dir):
    servers = []

    def start(runtime_lora: bool) -> OpenAIServer:
        srv = OpenAIServer(("127.0.0.1", 0), backend=LocalBackend(), models={"demo": ModelRef(base_path=str(demo_model_dir), name="demo")}, runtime_lora=runtime_lora)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_an_adapter_is_loaded_at_first_use_and_answers_as_in_process(lora_server, demo_model_dir, lora_adapter_dir):
    srv = lora_server(True)
    ref = ModelRef(base_path=str(demo_model_dir), adapter_path=str(lora_adapter_dir), name="job-7", base_name="demo")
    client = OpenAIBackend(srv.url)
    assert client.models() == ["demo"]
    remote = client.generate(ref, QUESTION, P)
    assert sorted(client.models()) == ["demo", "job-7"]
    local = LocalBackend().generate(ModelRef(base_path=str(demo_model_dir), adapter_path=str(lora_adapter_dir)), QUESTION, P)
    base = LocalBackend().generate(ModelRef(base_path=str(demo_model_dir)), QUESTION, P)
    assert remote == local and remote != base  # the adapter answered
    assert client.generate(ref, QUESTION, P) == remote  # loaded once; a new client finds it listed
    assert OpenAIBackend(srv.url).generate(ref, QUESTION, P) == remote
    # The server forgets it (a restart, or an unload): the next request loads it again.
    import httpx

    assert httpx.post(srv.url + "/v1/unload_lora_adapter", json={"lora_name": "job-7"}).status_code == 200
    assert client.models() == ["demo"]
    assert client.generate(ref, QUESTION, P) == remote and "job-7" in client.models()


def test_a_server_without_runtime_lora_gets_the_vllm_start_command(lora_server, demo_model_dir, lora_adapter_dir):
    srv = lora_server(False)
    ref = ModelRef(base_path=str(demo_model_dir), adapter_path=str(lora_adapter_dir), name="job-7", base_name="demo")
    with pytest.raises(InferenceError) as err:
        OpenAIBackend(srv.url, label="gpu-1").generate(ref, QUESTION, P)
    message = str(err.value)
    assert "would not load the adapter job-7 at run time (404" in message
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve demo --enable-lora --max-lora-rank 16" in message
    assert f"--lora-modules job-7={lora_adapter_dir}" in message


# --------------------------------------------------------------------------- Django: endpoints


def staff(user):
    """The Django admin site is for staff: the MedPortal admin who manages endpoints there."""
    user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    return user


@pytest.fixture
def allow_external(settings):
    settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = True


@pytest.fixture
def hosted(db, admin_user, monkeypatch):
    """A hosted model 'gpt-4o' on an external endpoint served by a stand-in, its key in OPENAI_TEST_KEY."""
    from training.services.endpoints import endpoint_save, hosted_model_register

    monkeypatch.setenv("OPENAI_TEST_KEY", "sk-test")
    with HostedStandIn(api_key="sk-test") as srv:
        endpoint = endpoint_save(actor=admin_user, name="openai", kind="openai", base_url=srv.url, api_key_env="OPENAI_TEST_KEY", external=True, read_timeout_s=5)
        model = hosted_model_register(actor=admin_user, name="gpt-4o", endpoint=endpoint)
        yield srv, endpoint, model


def test_the_key_is_an_environment_variable_name_never_the_key(admin_user, db):
    from medportal.errors import InvalidInput
    from training.services.endpoints import endpoint_save

    with pytest.raises(InvalidInput, match="NAME of an environment variable"):
        endpoint_save(actor=admin_user, name="x", kind="openai", base_url="http://127.0.0.1:9/v1", api_key_env="sk-abc123")
    with pytest.raises(InvalidInput, match="needs its base URL"):
        endpoint_save(actor=admin_user, name="y", kind="openai")


def test_admin_check_lists_models_and_latency_and_a_dead_endpoint_is_a_message(admin_user, client, hosted, db):
    from training.models import InferenceEndpoint

    srv, endpoint, _model = hosted
    dead = InferenceEndpoint.objects.create(name="dead", kind="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1)
    client.force_login(staff(admin_user))
    url = "/admin/training/inferenceendpoint/"
    response = client.post(url, {"action": "check_endpoints", "_selected_action": [endpoint.pk, dead.pk]}, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert "serves: gpt-4o" in text and "could not be reached" in text
    endpoint.refresh_from_db()
    assert endpoint.last_check["ok"] and endpoint.last_check["models"] == ["gpt-4o"] and endpoint.last_check["latency_ms"] >= 0
    assert "sk-test" not in text and "sk-test" not in json.dumps(endpoint.last_check)
    page = client.get(f"{url}{endpoint.pk}/change/").content.decode()
    assert "OPENAI_TEST_KEY" in page and "sk-test" not in page


def test_a_hosted_model_is_added_in_the_admin_and_is_a_contender_labelled_external(admin_user, client, allow_external, db):
    from chat.selectors import contestants
    from training.models import BaseModel, InferenceEndpoint

    endpoint = InferenceEndpoint.objects.create(name="hosted", kind="openai", base_url="http://127.0.0.1:9/v1", external=True)
    client.force_login(staff(admin_user))
    response = client.post("/admin/training/basemodel/add/", {"name": "gpt-4o", "endpoint": endpoint.pk, "remote_name": "gpt-4o-2024-08-06", "description": ""})
    assert response.status_code == 302, response.content.decode()[-2000:]
    model = BaseModel.objects.get(name="gpt-4o")
    assert model.is_hosted and model.endpoint == endpoint and model.remote_name == "gpt-4o-2024-08-06"
    assert AuditEvent.objects.filter(action="base_model.register", target_id=str(model.pk)).exists()
    labels = {c.label for c in contestants()}
    assert "gpt-4o (external)" in labels


def test_external_endpoints_can_be_forbidden(hosted, settings, clinician, db):
    from chat.selectors import contestants
    from chat.services import chat_session_create
    from medportal.errors import InvalidInput
    from training.runnables import runnable

    _srv, _endpoint, model = hosted
    settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = False
    assert model.pk not in {c.base_model.pk for c in contestants()}
    with pytest.raises(InferenceError, match="external endpoints are turned off on this deployment"):
        runnable(model)
    with pytest.raises(InvalidInput, match="external endpoints are turned off"):
        chat_session_create(user=clinician, base_model=model)


def test_a_hosted_model_cannot_be_fine_tuned(hosted, admin_user, curator, make_pair, allow_external):
    from medportal.errors import InvalidInput
    from tests.training.ui_factories import make_version
    from training.services.jobs import finetune_job_create

    version = make_version(curator, make_pair)
    with pytest.raises(InvalidInput, match="hosted model: it has no local weights to fine-tune"):
        finetune_job_create(actor=admin_user, dataset_version=version, base_model=hosted[2], preset="cpu_demo", enqueue=False)


# --------------------------------------------------------------------------- two endpoints at once


def test_two_endpoints_at_once_in_process_and_a_serve_model_process(tmp_path, demo_model_dir, lora_adapter_dir, admin_user, base_model, adapter_job):
    """The same greedy answer from the in-process endpoint and from a real serve_model process;
    the adapter of a job on the remote base model is loaded there at run time."""
    from tests.training.ui_factories import job_update
    from training.models import BaseModel, FineTuneJob
    from training.runnables import runnable
    from training.services.endpoints import base_model_bind, endpoint_save

    env = {**os.environ, "MEDPORTAL_DATA_DIR": str(tmp_path / "data"), "DJANGO_SUPERUSER_PASSWORD": "pw-root"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    for args in (["migrate", "--noinput", "-v0"], ["createsuperuser", "--noinput", "--username", "root", "--email", "r@example.org"], ["register_base_model", "--name", "demo", "--path", str(demo_model_dir), "--user", "root"]):
        done = subprocess.run([*manage, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
    server = subprocess.Popen(
        [*manage, "serve_model", "--model", "demo", "--served-model-name", "demo-0.1b", "--port", "0", "--enable-runtime-lora"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        ready, _, _ = select.select([server.stdout], [], [], 120)
        assert ready, "serve_model printed nothing within 120 s"
        info = json.loads(server.stdout.readline())
        gpu = endpoint_save(actor=admin_user, name="gpu-1", kind="openai", base_url=info["url"] + "/v1")
        remote_base = BaseModel.objects.create(name="demo-remote", path=str(demo_model_dir), registered_by=admin_user, has_chat_template=True)
        base_model_bind(actor=admin_user, base_model=remote_base, endpoint=gpu, remote_name="demo-0.1b")
        remote_job = FineTuneJob.objects.get(pk=adapter_job.pk)
        remote_job.pk = None
        remote_job.base_model = remote_base
        remote_job.save()
        job_update(remote_job, status=FineTuneJob.Status.SUCCEEDED, adapter_path=str(lora_adapter_dir))

        here, there = runnable(base_model), runnable(remote_base)
        assert here.endpoint is None and there.endpoint == gpu and there.ref.name == "demo-0.1b"
        assert here.backend().generate(here.ref, QUESTION, P) == there.backend().generate(there.ref, QUESTION, P)

        tuned_here, tuned_there = runnable(base_model, adapter_job), runnable(remote_base, remote_job)
        assert tuned_there.ref.name == f"job-{remote_job.pk}"
        answer = tuned_there.backend().generate(tuned_there.ref, QUESTION, P)
        assert answer == tuned_here.backend().generate(tuned_here.ref, QUESTION, P)
        assert f"job-{remote_job.pk}" in tuned_there.backend().models()  # loaded at run time
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


# --------------------------------------------------------------------------- chat, arena, diagnose


def _chat(session, user, frames_after: list[dict]):
    from tests.chat.test_chat_consumer import communicator, frames_until, headers

    hdrs = headers(user)

    async def scenario():
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        assert (await ws.connect(timeout=60))[0]
        await ws.receive_json_from(timeout=60)
        out = []
        for frame, until in frames_after:
            await ws.send_json_to(frame)
            out.append(await frames_until(ws, until))
        await ws.disconnect()
        return out

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_chat_with_a_hosted_model_masks_identifiers_and_audits(hosted, allow_external, clinician):
    from chat.models import ChatMessage
    from chat.services import chat_session_create

    srv, _endpoint, model = hosted
    session = chat_session_create(user=clinician, base_model=model, params={"max_new_tokens": 16})
    assert session.model_label == "gpt-4o (external)"
    [frames] = _chat(session, clinician, [({"type": "message", "content": "患者电话13812345678，头痛三天"}, "done")])
    assert frames[-1]["content"] == "".join(ANSWER)
    sent = json.dumps(srv.received[-1]["body"]["messages"], ensure_ascii=False)
    assert "13812345678" not in sent and "头痛三天" in sent
    assert srv.received[-1]["auth"] == "Bearer sk-test"
    event = AuditEvent.objects.get(action="inference.external")
    assert event.actor == clinician and event.target_id == str(session.pk)
    assert event.changes["purpose"] == "chat" and event.changes["items"] == 1 and event.changes["masked_items"] == 1
    assert ChatMessage.objects.filter(session=session, role="user").get().content == "患者电话13812345678，头痛三天"  # kept here


@pytest.mark.django_db(transaction=True)
def test_a_broken_stream_is_an_error_frame_the_socket_stays_open_and_no_half_answer_is_stored(hosted, allow_external, clinician):
    from chat.models import ChatMessage
    from chat.services import chat_session_create

    srv, _endpoint, model = hosted
    session = chat_session_create(user=clinician, base_model=model, params={"max_new_tokens": 16})
    srv.mode = "cut"
    first, second = None, None

    def flip():  # after the first answer fails the server is healthy again: the same socket answers
        srv.mode = "ok"

    from tests.chat.test_chat_consumer import communicator, frames_until, headers

    hdrs = headers(clinician)

    async def scenario():
        nonlocal first, second
        ws = communicator(f"/ws/chat/{session.pk}/", hdrs)
        assert (await ws.connect(timeout=60))[0]
        await ws.receive_json_from(timeout=60)
        await ws.send_json_to({"type": "message", "content": "头痛"})
        first = await frames_until(ws, "error")
        flip()
        await ws.send_json_to({"type": "regenerate"})
        second = await frames_until(ws, "done")
        await ws.disconnect()

    async_to_sync(scenario)()
    error = first[-1]
    assert error["code"] == "inference" and "ended the answer before it was complete" in error["message"]
    failed = ChatMessage.objects.get(pk=error["message_id"])
    assert failed.status == "failed" and failed.content == "" and "ended the answer" in failed.error
    assert second[-1]["content"] == "".join(ANSWER)


def test_diagnose_with_a_hosted_model_and_its_faults_never_500(hosted, allow_external, clinician, client, settings):
    srv, _endpoint, _model = hosted
    client.force_login(clinician)
    body = {"symptoms": "咳嗽三个月，电话13812345678", "model": "gpt-4o", "max_new_tokens": 8}
    ok = client.post("/api/v1/diagnose/", body, content_type="application/json")
    assert ok.status_code == 200 and ok.json()["diagnosis"] == "".join(ANSWER) and ok.json()["external"] is True
    sent = srv.received[-1]["body"]["messages"]
    assert "13812345678" not in json.dumps(sent, ensure_ascii=False)
    # No tokenizer here: the medical_inquiry template's system prompt and labelled fields, as chat messages.
    assert sent[0]["role"] == "system" and "诊断建议" in sent[0]["content"]
    assert sent[1]["role"] == "user" and sent[1]["content"].startswith("患者信息：") and "症状描述：咳嗽三个月" in sent[1]["content"]
    srv.mode = "slow"
    srv.delay_s = 6.0
    slow = client.post("/api/v1/diagnose/", body, content_type="application/json")
    assert slow.status_code == 502 and "did not answer within 5 s" in slow.json()["error"]["message"]
    settings.MEDPORTAL_ALLOW_EXTERNAL_ENDPOINTS = False
    refused = client.post("/api/v1/diagnose/", body, content_type="application/json")
    assert refused.status_code == 400 and "external endpoints are turned off" in refused.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_hosted_model_fights_in_the_arena_audited_and_masked(hosted, allow_external, clinician, base_model):
    from chat.selectors import contestants
    from chat.services import arena_battle_create
    from tests.chat.test_chat_consumer import communicator, frames_until, headers

    srv, _endpoint, model = hosted
    assert model.pk in {c.base_model.pk for c in contestants()}  # in the arena pool
    battle = arena_battle_create(
        user=clinician, prompt="胸痛，电话13812345678", contestant_a=(base_model, None), contestant_b=(model, None), params={"max_new_tokens": 8}
    )
    hdrs = headers(clinician)

    async def scenario():
        ws = communicator(f"/ws/arena/{battle.pk}/", hdrs)
        await ws.connect(timeout=60)
        await ws.receive_json_from(timeout=60)
        await ws.send_json_to({"type": "run"})
        frames = []
        while sum(1 for f in frames if f["type"] == "done") < 2:
            frames += await frames_until(ws, "done")
        await ws.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    done = {f["side"]: f["content"] for f in frames if f["type"] == "done"}
    assert done["b"] == "".join(ANSWER) and done["a"]
    assert "13812345678" not in json.dumps(srv.received[-1]["body"], ensure_ascii=False)
    event = AuditEvent.objects.get(action="inference.external")
    assert event.changes["purpose"] == "arena" and event.target_id == str(battle.pk) and event.changes["masked_items"] == 1
    battle.refresh_from_db()
    assert battle.label_b == "gpt-4o (external)"
