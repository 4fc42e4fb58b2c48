"""Generation through a serving endpoint vs in-process, on the demo model: per-token overhead and TTFT.

    .venv/bin/python bench/inference_overhead.py [--model-dir DIR] [--tokens 64] [--repeats 16]

The same greedy prompt is answered R times by the in-process backend (``LocalBackend.stream`` in
this process) and R times through an endpoint: MedPortal's OpenAI-compatible server
(``OpenAIServer`` over ``LocalBackend``, what ``manage.py serve_model`` runs) in a child process,
read by ``OpenAIBackend`` here — the path chat, the arena and evaluation take for a model bound to
an endpoint (server-sent events over HTTP, one JSON chunk per token, parsed here).

The paths alternate answer by answer, so load on a shared machine hits both. Reported:
- per_token_overhead_p50_ms (goal ≤ 1 ms): answer by answer, (time of the endpoint's answer −
  time of the in-process answer) / tokens, p50 over the pairs (the TTFT difference included);
- time to first token, median on each path, and the difference;
- the p50 gap between consecutive tokens on each path and their difference (bench/chat_ws.py's
  measure; over HTTP, pieces that arrive in one read show as near-zero gaps, so this difference
  understates the cost and is reported for comparison only);
- CPU per token on each path (this process; plus the server process for the endpoint) and the
  difference: the endpoint's cost in CPU, which load on a shared machine does not change;
- whether both paths gave the same greedy answer. One JSON line.

The model is built into /tmp unless --model-dir is given. Two cores: the server process and this
one share them, as a GPU host's server and the web app would not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import ROOT, emit, machine  # noqa: E402

sys.path.insert(0, str(ROOT))

QUESTION = [{"role": "user", "content": "头痛三天，伴有恶心，需要做哪些检查？"}]

SERVER = """
import json, sys
from training.inference.base import ModelRef
from training.inference.local import LocalBackend
from training.inference.server import OpenAIServer
backend = LocalBackend(max_concurrent=1)
ref = ModelRef(base_path=sys.argv[1], name="demo")
backend.cache.get(ref)
server = OpenAIServer(("127.0.0.1", 0), backend=backend, models={"demo": ref})
print(json.dumps({"url": server.url}), flush=True)
server.serve_forever(poll_interval=0.2)
"""


def timed(stream) -> tuple[str, float | None, list[float], float, int]:
    """(text, seconds to the first piece, gaps between consecutive pieces, total seconds, pieces)."""
    t0 = time.perf_counter()
    stamps, parts = [], []
    for piece in stream:
        stamps.append(time.perf_counter())
        parts.append(piece)
    ttft = stamps[0] - t0 if stamps else None
    return "".join(parts), ttft, [b - a for a, b in zip(stamps, stamps[1:])], time.perf_counter() - t0, len(parts)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interleaved(paths: dict, params, repeats: int, server_pid: int) -> dict:
    """Answer R times on each path, alternating (load changes on a shared machine hit both).
    CPU per token: this process's for the in-process path; this process's plus the server's for
    the endpoint path (a figure load on the machine does not change)."""
    out = {name: {"gaps": [], "ttfts": [], "texts": set(), "per_piece": [], "cpu_s": 0.0, "pieces": 0} for name in paths}
    for backend, ref in paths.values():
        backend.generate(ref, QUESTION, params)  # warm up (load, first allocation)
    for _ in range(repeats):
        for name, (backend, ref) in paths.items():
            cpu0 = process_cpu_s(os.getpid()) + (process_cpu_s(server_pid) if name == "endpoint" else 0.0)
            text, ttft, gaps, total, pieces = timed(backend.stream(ref, QUESTION, params))
            out[name]["cpu_s"] += process_cpu_s(os.getpid()) + (process_cpu_s(server_pid) if name == "endpoint" else 0.0) - cpu0
            out[name]["pieces"] += pieces
            out[name]["per_piece"].append(total / max(1, pieces))
            out[name]["texts"].add(text)
            out[name]["ttfts"].append(ttft)
            out[name]["gaps"] += gaps
    return {
        name: {
            "per_piece": v["per_piece"],
            "gap_p50_ms": statistics.median(v["gaps"]) * 1000,
            "ttft_median_ms": statistics.median(v["ttfts"]) * 1000,
            "answer_ms_per_token_median": statistics.median(v["per_piece"]) * 1000,
            "cpu_ms_per_token": v["cpu_s"] * 1000 / max(1, v["pieces"]),
            "texts": v["texts"],
        }
        for name, v in out.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=16)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # the server process gets the other core
    from training.inference import GenerationParams, ModelRef
    from training.inference.local import LocalBackend
    from training.inference.openai_http import OpenAIBackend

    model_dir = args.model_dir
    if model_dir is None:
        model_dir = Path("/tmp/medportal-bench-demo")
        if not (model_dir / "config.json").is_file():
            from training.engine.demo_model import build_demo_model, demo_corpus

            build_demo_model(model_dir, demo_corpus())
    params = GenerationParams(max_new_tokens=args.tokens)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(model_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = json.loads(server.stdout.readline())["url"]
        client = OpenAIBackend(url)
        paths = {"in_process": (LocalBackend(max_concurrent=1), ModelRef(base_path=str(model_dir))), "endpoint": (client, ModelRef(base_path=str(model_dir), name="demo"))}
        figures = interleaved(paths, params, args.repeats, server.pid)
        client.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    local, remote = figures["in_process"], figures["endpoint"]

    emit(
        {
            "bench": "inference_overhead",
            "machine": machine(),
            "tokens": args.tokens,
            "repeats": args.repeats,
            **{name: {k: round(v[k], 3) for k in ("gap_p50_ms", "ttft_median_ms", "answer_ms_per_token_median", "cpu_ms_per_token")} for name, v in figures.items()},
            # Paired answer by answer: (endpoint answer time - in-process answer time) / tokens, p50.
            "per_token_overhead_p50_ms": round(statistics.median((r - l) * 1000 for r, l in zip(remote["per_piece"], local["per_piece"], strict=True)), 3),
            "gap_p50_difference_ms": round(remote["gap_p50_ms"] - local["gap_p50_ms"], 3),
            "cpu_overhead_ms_per_token": round(remote["cpu_ms_per_token"] - local["cpu_ms_per_token"], 3),
            "ttft_overhead_ms": round(remote["ttft_median_ms"] - local["ttft_median_ms"], 2),
            "same_greedy_answer": local["texts"] == remote["texts"] and len(local["texts"]) == 1,
            "goal_per_token_overhead_ms": 1.0,
        }
    )


if __name__ == "__main__":
    main()
