"""The inference interface on a real (small) model: the in-process backend, the
OpenAI-compatible server and the HTTP backend talking to it."""

from __future__ import annotations

import json

import shutil
import threading

import pytest

from training.inference import SEED_CHAT_PARAMS, GenerationParams, InferenceError, ModelRef, ParamsError, StreamStats
from training.inference.local import LocalBackend
from training.inference.openai_http import OpenAIBackend
from training.inference.server import OpenAIServer

QUESTION = [{"role": "user", "content": "高血压患者平时需要注意什么？"}]


@pytest.fixture(scope="module")
def backend():
    return LocalBackend(max_concurrent=2)


@pytest.fixture
def ref(demo_model_dir):
    return ModelRef(base_path=str(demo_model_dir), name="demo")


def test_params_validate_every_field_and_name_the_bad_ones():
    with pytest.raises(ParamsError) as err:
        GenerationParams(max_new_tokens=0, temperature=-1, top_p=0, top_k=-2, repetition_penalty=9)
    assert set(err.value.errors) == {"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"}
    assert GenerationParams.from_dict({"temperature": "0.1", "max_new_tokens": "64"}).max_new_tokens == 64
    with pytest.raises(ParamsError) as err:
        GenerationParams.from_dict({"temprature": 1})
    assert err.value.errors == {"temprature": "unknown parameter"}
    assert SEED_CHAT_PARAMS.to_dict() | {} == {
        "max_new_tokens": 512, "temperature": 0.1, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "seed": None
    }


def test_greedy_streaming_is_the_generation_split_into_pieces(backend, ref):
    params = GenerationParams(max_new_tokens=24)
    stats = StreamStats()
    pieces = list(backend.stream(ref, QUESTION, params, stats=stats))
    assert len(pieces) >= 2  # streamed, not delivered at once
    assert "".join(pieces) == backend.generate(ref, QUESTION, params)  # greedy is reproducible
    assert stats.prompt_tokens > 5 and 1 <= stats.completion_tokens <= 24
    assert stats.ttft_s is not None and stats.ttft_s > 0 and stats.finish_reason in ("stop", "length")
    assert stats.as_dict()["completion_tokens"] == stats.completion_tokens


def test_a_generation_stops_at_max_new_tokens(backend, ref):
    stats = StreamStats()
    backend.generate(ref, QUESTION, GenerationParams(max_new_tokens=3, temperature=0.0, repetition_penalty=1.0), stats=stats)
    assert stats.completion_tokens <= 3


def test_seeded_sampling_is_reproducible_and_differs_between_seeds(backend, ref):
    a = backend.generate(ref, QUESTION, GenerationParams(max_new_tokens=20, temperature=1.0, seed=1))
    b = backend.generate(ref, QUESTION, GenerationParams(max_new_tokens=20, temperature=1.0, seed=1))
    c = backend.generate(ref, QUESTION, GenerationParams(max_new_tokens=20, temperature=1.0, seed=2))
    assert a == b and a != c


def test_cancel_stops_the_generation_early(backend, ref):
    cancel = threading.Event()
    stats = StreamStats()
    got = []
    for piece in backend.stream(ref, QUESTION, GenerationParams(max_new_tokens=200, repetition_penalty=1.0), cancel=cancel, stats=stats):
        got.append(piece)
        cancel.set()
    assert stats.finish_reason == "cancelled"
    assert stats.completion_tokens < 200


def test_leaving_the_stream_stops_the_generation_thread(backend, ref):
    stream = backend.stream(ref, QUESTION, GenerationParams(max_new_tokens=200))
    next(stream)
    stream.close()  # GeneratorExit in the backend: the slot is released and the thread joined
    assert not [t for t in threading.enumerate() if t.name == "medportal-generate"]
    assert backend._slots._value == backend.max_concurrent


def test_generations_beyond_the_limit_wait_for_a_slot(ref):
    backend = LocalBackend(max_concurrent=1)
    first = backend.stream(ref, QUESTION, GenerationParams(max_new_tokens=8))
    next(first)  # holds the only slot
    second_stats = StreamStats()
    done = threading.Event()

    def run_second():
        backend.generate(ref, QUESTION, GenerationParams(max_new_tokens=4), stats=second_stats)
        done.set()

    thread = threading.Thread(target=run_second)
    thread.start()
    for _ in range(200):
        if backend.waiting == 1:
            break
        threading.Event().wait(0.01)
    assert backend.waiting == 1 and not done.is_set()
    list(first)  # finish the first generation: the slot frees
    thread.join(timeout=60)
    assert done.is_set() and second_stats.waited_s > 0


def test_the_cache_shares_models_and_evicts_the_least_recently_used(demo_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(demo_model_dir, copy)
    a, b = ModelRef(base_path=str(demo_model_dir)), ModelRef(base_path=str(copy))
    backend = LocalBackend(max_cache_bytes=1)  # room for one model only
    first = backend.cache.get(a)
    assert backend.cache.get(a) is first  # shared
    backend.cache.get(b)
    assert backend.cache.keys() == [b.key]  # a evicted


def test_bad_messages_and_missing_folders_are_clear_errors(backend, ref, tmp_path):
    with pytest.raises(InferenceError, match="last message must be the user's"):
        backend.generate(ref, [{"role": "assistant", "content": "hi"}], GenerationParams(max_new_tokens=2))
    with pytest.raises(InferenceError, match="role 'robot'"):
        backend.generate(ref, [{"role": "robot", "content": "hi"}], GenerationParams(max_new_tokens=2))
    with pytest.raises(InferenceError, match="no config.json"):
        backend.generate(ModelRef(base_path=str(tmp_path)), QUESTION, GenerationParams(max_new_tokens=2))


@pytest.fixture
def server(backend, ref):
    srv = OpenAIServer(("127.0.0.1", 0), backend=backend, models={"demo": ref}, api_key="k1")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_the_openai_backend_streams_the_same_answer_from_the_server(server, backend, ref):
    client = OpenAIBackend(server.url + "/v1", api_key="k1")
    assert client.models() == ["demo"]
    params = GenerationParams(max_new_tokens=16)
    stats = StreamStats()
    pieces = list(client.stream(ModelRef(base_path="", name="demo"), QUESTION, params, stats=stats))
    assert "".join(pieces) == backend.generate(ref, QUESTION, params)
    assert len(pieces) >= 2 and stats.completion_tokens >= 1 and stats.prompt_tokens > 5 and stats.finish_reason in ("stop", "length")
    client.close()


def test_a_refused_post_leaves_the_kept_alive_connection_usable(server):
    """A POST answered before its body was read (wrong key, no such route, runtime LoRA off)
    must not leave the body on the connection, to be read as the next request ("400 Bad
    request syntax" for the request that follows)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    body = json.dumps({"lora_name": "a", "lora_path": "/nowhere"})
    for path, key in (("/v1/load_lora_adapter", "k1"), ("/v1/nothing-here", "k1"), ("/v1/chat/completions", "wrong")):
        conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status in (401, 404), (path, answer.status)
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer k1"})
        models = conn.getresponse()
        assert models.status == 200 and json.loads(models.read())["data"][0]["id"] == "demo", path
    conn.close()


def test_the_server_answers_plain_completions_and_clear_errors(server):
    import httpx

    headers = {"Authorization": "Bearer k1"}
    body = {"model": "demo", "messages": QUESTION, "max_tokens": 5}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion" and data["choices"][0]["message"]["role"] == "assistant"
    assert data["usage"]["completion_tokens"] <= 5
    r = httpx.post(server.url + "/v1/chat/completions", json={**body, "model": "nope"}, headers=headers, timeout=10)
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/chat/completions", json={**body, "temperature": 99}, headers=headers, timeout=10)
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/v1/models", timeout=10).status_code == 401


def test_an_unreachable_server_is_a_clear_error():
    client = OpenAIBackend("http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(InferenceError, match="could not be reached"):
        client.generate(ModelRef(base_path="", name="x"), QUESTION, GenerationParams(max_new_tokens=2))
