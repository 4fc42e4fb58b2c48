"""Chat over WebSockets on the demo model, through Daphne: the path's overhead and 100 sockets.

    .venv/bin/python bench/chat_ws.py [--model-dir DIR] [--tokens 64] [--repeats 8] [--sockets 100]

1. Overhead. The same greedy prompt is answered R times by the raw streamer (the in-process
   backend's ``stream`` in this process) and R times through the whole WebSocket path (Daphne
   in a child process → ChatConsumer → DB writes → frames → an aiohttp client). Reported: the
   p50 gap between consecutive tokens on each path and their difference (the per-token
   overhead; goal ≤ 1 ms), and the median time to first token on each path and their
   difference (goal ≤ 20 ms).
2. Concurrency. N sockets, each in its own chat, ask at once; every socket must receive a
   done frame whose content equals the concatenation of its token frames and the stored
   answer (a missing or mismatched socket counts as dropped; goal 0). Reported: tokens
   delivered, wall time, server peak RSS.

The database is a throwaway SQLite file; the model is built into /tmp unless --model-dir is given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, emit, machine  # noqa: E402

QUESTION = "头痛三天，伴有恶心，需要做哪些检查？"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def setup(data_dir: Path, model_dir: Path, sockets: int, tokens: int):
    os.environ["MEDPORTAL_DATA_DIR"] = str(data_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medportal.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from chat.services import chat_session_create
    from training.models import BaseModel

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench-clinician", password="x")
    user.groups.add(Group.objects.get_or_create(name="clinician")[0])
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0] if hasattr(settings, "AUTHENTICATION_BACKENDS") else "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    base = BaseModel.objects.create(name="demo", path=str(model_dir), registered_by=user, has_chat_template=True)
    params = {"max_new_tokens": tokens, "temperature": 0.0, "repetition_penalty": 1.0}
    sessions = [chat_session_create(user=user, base_model=base, params=params, system_prompt="").pk for _ in range(sockets + 1)]
    return store.session_key, base, sessions, params


def raw_stream(model_dir: Path, params: dict, repeats: int) -> dict:
    from training.inference import GenerationParams, ModelRef, StreamStats
    from training.inference.local import LocalBackend

    backend = LocalBackend(max_concurrent=1)
    ref = ModelRef(base_path=str(model_dir))
    p = GenerationParams.from_dict(params)
    backend.generate(ref, [{"role": "user", "content": QUESTION}], p)  # load + warm up
    gaps, ttfts, counts = [], [], []
    for _ in range(repeats):
        stats = StreamStats()
        last = None
        n = 0
        for _piece in backend.stream(ref, [{"role": "user", "content": QUESTION}], p, stats=stats):
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now
            n += 1
        ttfts.append(stats.ttft_s)
        counts.append(n)
    return {"gaps": gaps, "ttfts": ttfts, "pieces": counts}


async def ws_path(url: str, cookie: str, session_id: int, repeats: int) -> dict:
    import aiohttp

    gaps, ttfts, counts = [], [], []
    async with aiohttp.ClientSession(headers={"Cookie": f"sessionid={cookie}", "Origin": url.replace("ws://", "http://").split("/ws/")[0]}) as http:
        async with http.ws_connect(f"{url}/ws/chat/{session_id}/", max_msg_size=0) as ws:
            await ws.receive_json()  # ready
            await ws.send_json({"type": "message", "content": QUESTION})  # warm-up (model load)
            while (await ws.receive_json())["type"] != "done":
                pass
            for _ in range(repeats):
                await ws.send_json({"type": "regenerate"})
                sent = time.perf_counter()
                first = last = None
                n = 0
                while True:
                    frame = await ws.receive_json()
                    now = time.perf_counter()
                    if frame["type"] == "token":
                        n += 1
                        if first is None:
                            first = now
                        else:
                            gaps.append(now - last)
                        last = now
                    elif frame["type"] == "done":
                        break
                    elif frame["type"] == "error":
                        raise RuntimeError(frame)
                ttfts.append(first - sent)
                counts.append(n)
    return {"gaps": gaps, "ttfts": ttfts, "pieces": counts}


async def many_sockets(url: str, cookie: str, session_ids: list[int]) -> dict:
    import aiohttp

    origin = url.replace("ws://", "http://")

    async def one(session_id: int) -> dict:
        async with aiohttp.ClientSession(headers={"Cookie": f"sessionid={cookie}", "Origin": origin}) as http:
            async with http.ws_connect(f"{url}/ws/chat/{session_id}/", max_msg_size=0, heartbeat=None) as ws:
                await ws.receive_json()
                await ws.send_json({"type": "message", "content": QUESTION})
                tokens = []
                while True:
                    frame = await ws.receive_json(timeout=900)
                    if frame["type"] == "token":
                        tokens.append(frame["text"])
                    elif frame["type"] == "done":
                        return {"session": session_id, "tokens": len(tokens), "ok": "".join(tokens) == frame["content"], "message_id": frame["message_id"], "content": frame["content"]}
                    elif frame["type"] == "error":
                        return {"session": session_id, "tokens": len(tokens), "ok": False, "error": frame["message"]}

    results = await asyncio.gather(*(one(s) for s in session_ids), return_exceptions=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="A demo model folder (default: build one into /tmp/medportal-bench-demo).")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--max-concurrent", type=int, default=4, help="Server's MEDPORTAL_INFERENCE_MAX_CONCURRENT.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    model_dir = args.model_dir
    if model_dir is None:
        model_dir = Path("/tmp/medportal-bench-demo")
        if not (model_dir / "config.json").is_file():
            from training.engine.demo_model import build_demo_model, demo_corpus

            build_demo_model(model_dir, demo_corpus())
    data_dir = Path(tempfile.mkdtemp(prefix="medportal-chat-bench-"))
    cookie, _base, sessions, params = setup(data_dir, model_dir, args.sockets, args.tokens)

    raw = raw_stream(model_dir, params, args.repeats)

    port = free_port()
    # DEBUG is off here: daphne refuses the development SECRET_KEY (medportal.E001), so the bench brings one.
    env = {**os.environ, "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50), "MEDPORTAL_DATA_DIR": str(data_dir), "MEDPORTAL_INFERENCE_MAX_CONCURRENT": str(args.max_concurrent)}
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port), "medportal.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    peak = {"rss": 0.0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_mb(server.pid))
            time.sleep(0.2)

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        url = f"ws://127.0.0.1:{port}"
        ws = asyncio.run(ws_path(url, cookie, sessions[0], args.repeats))
        idle_rss = rss_mb(server.pid)
        threading.Thread(target=watch, daemon=True).start()
        t0 = time.perf_counter()
        results = asyncio.run(many_sockets(url, cookie, sessions[1:]))
        wall = time.perf_counter() - t0
        stop.set()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)

    from chat.models import ChatMessage

    ok = [r for r in results if isinstance(r, dict) and r.get("ok")]
    stored_ok = sum(1 for r in ok if ChatMessage.objects.filter(pk=r["message_id"], content=r["content"]).exists())
    from training.engine.generation import percentile

    raw_gap, ws_gap = percentile(raw["gaps"], 50), percentile(ws["gaps"], 50)
    raw_ttft, ws_ttft = statistics.median(raw["ttfts"]), statistics.median(ws["ttfts"])
    emit(
        {
            "bench": "chat_ws",
            "machine": machine(),
            "model": str(model_dir),
            "tokens_per_answer": args.tokens,
            "repeats": args.repeats,
            "raw_token_gap_ms_p50": round(raw_gap * 1000, 3),
            "ws_token_gap_ms_p50": round(ws_gap * 1000, 3),
            "per_token_overhead_ms_p50": round((ws_gap - raw_gap) * 1000, 3),
            "raw_ttft_ms_median": round(raw_ttft * 1000, 2),
            "ws_ttft_ms_median": round(ws_ttft * 1000, 2),
            "ttft_overhead_ms": round((ws_ttft - raw_ttft) * 1000, 2),
            "pieces_raw_vs_ws": [sum(raw["pieces"]), sum(ws["pieces"])],
            "sockets": args.sockets,
            "server_max_concurrent_generations": args.max_concurrent,
            "sockets_completed": len(ok),
            "answers_stored_equal": stored_ok,
            "dropped": args.sockets - len(ok) + (len(ok) - stored_ok),
            "tokens_delivered": sum(r["tokens"] for r in results if isinstance(r, dict)),
            "errors": [str(r)[:200] for r in results if not (isinstance(r, dict) and r.get("ok"))][:5],
            "wall_s": round(wall, 2),
            "server_rss_mb_idle": round(idle_rss, 1),
            "server_rss_mb_peak": round(peak["rss"], 1),
            "command": " ".join(["bench/chat_ws.py", *sys.argv[1:]]),
        }
    )


if __name__ == "__main__":
    main()
