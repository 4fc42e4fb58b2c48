"""The engine beside LLaMA-Factory on one CUDA GPU: memory, speed and the loss curve, one process per run.

The setting of the issue's table (../shared/tools/gpu-compare reproduced it on an H200): a
Qwen3-0.6B-shaped model (random bf16 weights, vocabulary 151,936, tied embeddings) with a 32k
byte-level BPE tokenizer trained here by the engine's own trainer on the shared toyhom + Huatuo
texts, LoRA r8 on every linear layer, bf16, cutoff 1024, batch 8, one epoch over N real
consultations (toyhom, short, Chinese) and N_LONG long ones (chatdoctor, English). Nothing is
downloaded; the model weights are made on the machine that runs the bench.

Runs (``--only`` picks some; ``--list`` names them):
  mp_pack / mp_pack_plain        the engine with packing, fused loss on / off (``fused_loss=false``)
  lf_neat_pack                   LLaMA-Factory with ``packing`` + ``neat_packing``
  mp_nopack / lf_nopack          padded batches
  mp_pack_long, lf_neat_pack_long, mp_nopack_long, lf_nopack_long   the long set
  mp_liger / lf_liger            Liger's kernels (``use_liger_kernel`` / ``enable_liger_kernel``) when liger-kernel imports
  mp_compile                     ``torch_compile=true``
  mp_qlora                       QLoRA 4-bit (``quantization_bit=4``) when bitsandbytes imports
  mp_torchrun                    the engine under ``torchrun --nproc_per_node 1`` (the distributed code path)
  gen                            batched generation (16 prompts × 64 tokens, batch 16) vs one by one
  profile / profile_plain        torch.profiler over 10 engine steps (fused / plain loss): top ops, host syncs and
                                 device→host copies per step (OUT/profile*.txt holds the op table)
Every figure is the trainer's own ``train_runtime`` (loading and tokenising excluded) for the
same N examples, so examples/s compare across tools; peak memory is
``torch.cuda.max_memory_allocated`` in each run's process. ``OUT/results.json`` is rewritten
after every run, with a ``goals`` block: engine peak ≤ 40 % of LLaMA-Factory's, examples/s ≥ 1.5×
with packing, final losses within 2 %.

    python bench/gpu_compare.py OUT                       # on the GPU machine (see docs/training-engine.md)
    python bench/gpu_compare.py OUT --cpu --n 48          # dry run on a CPU: tiny model, cutoff 256, fp32
    LF_SITE=/path/to/site python bench/gpu_compare.py OUT --only mp_pack,lf_neat_pack

LLaMA-Factory runs need ``llamafactory`` importable (from ``LF_SITE`` prepended to PYTHONPATH, or
installed); without it they are recorded as skipped, as are liger and QLoRA runs without their
packages.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT))

QWEN3_06B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024,
    "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
    "head_dim": 128, "max_position_embeddings": 40960, "rope_theta": 1000000, "rms_norm_eps": 1e-6,
    "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": None, "torch_dtype": "bfloat16", "use_cache": True, "initializer_range": 0.02,
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 32002, "torch_dtype": "float32"}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work or (self.out / "work"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.cpu = args.cpu
        self.cutoff = 256 if self.cpu else 1024
        self.results: dict = {"N": args.n, "N_LONG": args.n_long, "cpu_dry_run": self.cpu, "runs": {}}
        self.lf_env = self.env(os.environ.get("LF_SITE", ""))

    # ---- plumbing -------------------------------------------------------------------------

    def env(self, *paths: str) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = ":".join(p for p in (*paths, str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["DISABLE_VERSION_CHECK"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
        return env

    def save(self) -> None:
        self.results["goals"] = self.goals()
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, ensure_ascii=False))

    def sh(self, name: str, cmd: list[str], env: dict, timeout: float) -> tuple[object, str]:
        started = time.time()
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, text=True)
            text, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:
            text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            rc = "timeout"
        with (self.out / "runs.log").open("a") as handle:
            handle.write(f"\n===== {name} rc={rc}\n{text[-20000:]}")
        log(name, "rc", rc, f"{time.time() - started:.1f}s")
        return rc, text

    def importable(self, module: str, env: dict | None = None) -> bool:
        code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
        return subprocess.run([sys.executable, "-c", code], env=env or self.env()).returncode == 0

    # ---- 1. model, tokenizer and data -------------------------------------------------------

    def prepare(self) -> None:
        from training.engine.demo_model import ENDOFTEXT, IM_END, _train_tokenizer

        toyhom = []
        with open(SHARED / "toyhom_chinese_medical_dialogue" / "样例_内科5000-6000.csv", encoding="gb18030", newline="") as handle:
            for row in csv.DictReader(handle):
                question, answer = (row["ask"] or "").strip(), (row["answer"] or "").strip()
                if question and answer:
                    toyhom.append({"instruction": question, "input": "", "output": answer})
        chatdoctor = json.loads((SHARED / "chatdoctor_genmedgpt5k" / "chatdoctor5k.json").read_text(encoding="utf-8"))
        self.data = {"toyhom": toyhom[: self.args.n], "chatdoctor": chatdoctor[: self.args.n_long]}
        self.ddir = self.work / "data"
        self.ddir.mkdir(exist_ok=True)
        for name, rows in self.data.items():
            (self.ddir / f"{name}.json").write_text(json.dumps(rows, ensure_ascii=False))
        (self.ddir / "dataset_info.json").write_text(json.dumps({k: {"file_name": f"{k}.json"} for k in self.data}))

        self.mdir = self.work / ("tiny" if self.cpu else "q06")
        if not (self.mdir / "model.safetensors").exists():
            huatuo = [json.loads(line) for line in (SHARED / "huatuo_llama_med_chinese" / "llama_data.first3000.jsonl").open(encoding="utf-8")]
            texts = [r["instruction"] + "\n" + r["output"] for r in toyhom] + [h["instruction"] + "\n" + h["output"] for h in huatuo]
            tokenizer = _train_tokenizer(texts, 32000)
            self.mdir.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(self.mdir)
            eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(ENDOFTEXT)
            config = dict(QWEN3_06B, eos_token_id=eos, pad_token_id=pad, **(TINY if self.cpu else {}))
            if self.cpu:
                config["layer_types"] = ["full_attention"] * config["num_hidden_layers"]
            (self.mdir / "config.json").write_text(json.dumps(config, indent=2))
            (self.mdir / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, pad], "pad_token_id": pad, "do_sample": False}))
            code = (
                "import json, torch, sys\nfrom transformers import AutoConfig, AutoModelForCausalLM\n"
                f"cfg = AutoConfig.from_pretrained({str(self.mdir)!r})\ntorch.manual_seed(0)\n"
                f"with torch.device({'cpu' if self.cpu else 'cuda'!r}):\n"
                f"    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.{'float32' if self.cpu else 'bfloat16'})\n"
                f"m.save_pretrained({str(self.mdir)!r})\nprint(json.dumps({{'params': sum(p.numel() for p in m.parameters())}}))\n"
            )
            rc, text = self.sh("build_model", [sys.executable, "-c", code], self.env(), 600)
            self.results["build_model"] = text.strip().splitlines()[-1:] if text else rc
        self.tokens = self.count_tokens()
        self.results["tokens"] = self.tokens
        import peft
        import torch
        import transformers

        self.results["env"] = {
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        }
        self.save()

    def count_tokens(self) -> dict[str, int]:
        """Tokens per set as the engine encodes them (template qwen3, answer-only labels, cut at the cutoff)."""
        from transformers import AutoTokenizer

        from training.engine.data import encode_records

        tokenizer = AutoTokenizer.from_pretrained(self.mdir)
        counts = {}
        for name, rows in self.data.items():
            examples, _, _ = encode_records(tokenizer, "qwen3", rows, self.cutoff)
            counts[name] = sum(len(e["input_ids"]) for e in examples)
        return counts

    # ---- 2. runs ---------------------------------------------------------------------------

    def common(self) -> dict:
        return dict(lora_rank=8, lora_alpha=16, lora_dropout=0.0, learning_rate=1e-4, lr_scheduler_type="cosine", warmup_ratio=0.1,
                    num_train_epochs=1.0, per_device_train_batch_size=8, gradient_accumulation_steps=1, bf16=not self.cpu,
                    cutoff_len=self.cutoff, seed=42)

    def mp_run(self, name: str, packing: bool, extra: dict | None = None, launcher: list[str] | None = None, ds: str = "toyhom", timeout: float = 300) -> None:
        config = dict(self.common(), template="qwen3", packing=packing, gradient_checkpointing=False, save_steps=100000, logging_steps=10, **(extra or {}))
        path = self.work / f"{name}.json"
        path.write_text(json.dumps(config))
        args = ["train", "--config", str(path), "--model", str(self.mdir), "--train", str(self.ddir / f"{ds}.json"), "--out", str(self.work / "runs" / name), "--no-resume"]
        rc, text = self.sh(name, (launcher or [sys.executable]) + ["-m", "training.engine"] + args, self.env(), timeout)
        events = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "type" in event:
                events.append(event)
        done = next((e for e in reversed(events) if e["type"] == "done"), None)
        result: dict = {"rc": rc}
        if done:
            runtime = done.get("train_runtime") or 0
            result.update(
                status=done["status"], train_runtime=runtime, examples_per_s=round(len(self.data[ds]) / runtime, 2) if runtime else None,
                tokens_per_s=round(self.tokens[ds] / runtime, 1) if runtime else None, peak_gb=done.get("peak_gpu_memory_gb"),
                loss_first=done.get("train_loss_first"), loss_last=done.get("train_loss_last"), steps=done.get("step"),
                losses=[(e["step"], e["loss"]) for e in events if e["type"] == "log"],
                loss_kind=next((e["text"].rsplit("loss ", 1)[-1] for e in events if e["type"] == "message" and "loss " in e.get("text", "")), None),
            )
        else:
            result["tail"] = text[-2000:]
        self.results["runs"][name] = result
        self.save()

    def lf_run(self, name: str, extra: dict | None = None, ds: str = "toyhom", timeout: float = 400) -> None:
        if not self.importable("llamafactory", self.lf_env):
            self.results["runs"][name] = "skipped: llamafactory is not importable (set LF_SITE)"
            self.save()
            return
        out_dir = self.work / "runs" / name
        args = dict(model_name_or_path=str(self.mdir), trust_remote_code=False, stage="sft", do_train=True, finetuning_type="lora",
                    lora_rank=8, lora_alpha=16, lora_dropout=0.0, lora_target="all", dataset=ds, dataset_dir=str(self.ddir),
                    template="qwen3_nothink", cutoff_len=self.cutoff, max_samples=len(self.data[ds]), overwrite_cache=True,
                    preprocessing_num_workers=8, output_dir=str(out_dir), logging_steps=10, save_steps=100000, overwrite_output_dir=True,
                    report_to="none", per_device_train_batch_size=8, gradient_accumulation_steps=1, learning_rate=1e-4, num_train_epochs=1.0,
                    lr_scheduler_type="cosine", warmup_steps=0.1, bf16=not self.cpu, disable_gradient_checkpointing=True, seed=42,
                    flash_attn="sdpa", plot_loss=False)
        args.update(extra or {})
        code = ("import torch\nfrom llamafactory.train.tuner import run_exp\n"
                f"run_exp({args!r})\nprint('PEAK', torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0)\n")
        rc, text = self.sh(name, [sys.executable, "-c", code], self.lf_env, timeout)
        result: dict = {"rc": rc}
        try:
            runtime = json.loads((out_dir / "train_results.json").read_text())["train_runtime"]
            state = json.loads((out_dir / "trainer_state.json").read_text())
            losses = [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]
            peak = [line for line in text.splitlines() if line.startswith("PEAK")]
            result.update(
                train_runtime=runtime, examples_per_s=round(len(self.data[ds]) / runtime, 2), tokens_per_s=round(self.tokens[ds] / runtime, 1),
                peak_gb=round(float(peak[-1].split()[1]), 3) if peak else None, loss_first=losses[0][1] if losses else None,
                loss_last=losses[-1][1] if losses else None, steps=state.get("global_step"), losses=losses,
            )
        except (OSError, ValueError, KeyError, IndexError) as exc:
            result.update(error=repr(exc), tail=text[-2000:])
        self.results["runs"][name] = result
        self.save()

    def optional(self, name: str, module: str, fn) -> None:
        if not self.importable(module):
            self.results["runs"][name] = f"skipped: {module} is not importable"
            self.save()
            return
        fn()

    def gen_run(self) -> None:
        code = f"""
import json, time, torch
try:
    from training.engine.loading import load_model
except ImportError:
    from training.engine.generation import load_model
from training.engine.generation import generate_batched
model, tok = load_model({str(self.mdir)!r})
rows = json.load(open({str(self.ddir / 'toyhom.json')!r}))[:16]
convs = [[{{"role": "user", "content": r["instruction"]}}] for r in rows]
out = {{}}
for bs in (1, 16):
    torch.cuda.is_available() and torch.cuda.synchronize(); t = time.time()
    res = generate_batched(model_path={str(self.mdir)!r}, template="qwen3", conversations=convs, max_new_tokens=64, batch_size=bs, loaded=(model, tok))
    torch.cuda.is_available() and torch.cuda.synchronize()
    out[bs] = {{"seconds": round(time.time() - t, 2), "tokens": sum(r["completion_tokens"] for r in res), "texts": [r["predict"] for r in res]}}
same = sum(a == b for a, b in zip(out[1]["texts"], out[16]["texts"]))
print(json.dumps({{"bs1_s": out[1]["seconds"], "bs16_s": out[16]["seconds"], "speedup": round(out[1]["seconds"] / out[16]["seconds"], 2), "tokens": out[16]["tokens"], "identical_answers": same, "of": len(convs)}}))
"""
        rc, text = self.sh("gen", [sys.executable, "-c", code], self.env(), 300)
        try:
            self.results["runs"]["gen"] = json.loads(text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.results["runs"]["gen"] = {"rc": rc, "tail": text[-2000:]}
        self.save()

    def profile_run(self, name: str = "profile", extra: dict | None = None) -> None:
        """torch.profiler over a short engine run (10 steps of 8 packed rows): where a step's time goes."""
        config = dict(self.common(), template="qwen3", packing=True, max_steps=10, logging_steps=5, save_steps=100000, **(extra or {}))
        code = f"""
import json, torch
from torch.profiler import ProfilerActivity, profile
from training.engine.config import FinetuneConfig
from training.engine.runner import train
acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
config = FinetuneConfig.from_dict({config!r})
with profile(activities=acts) as prof:
    done = train(config, model_path={str(self.mdir)!r}, train_file={str(self.ddir / 'toyhom.json')!r}, output_dir={str(self.work / 'runs' / name)!r}, on_event=lambda e: None, resume=False)
steps = done["step"]
sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=50))
ka = {{e.key: e for e in prof.key_averages()}}
def count(*names): return sum(ka[n].count for n in names if n in ka)
summary = {{"steps": steps, "train_runtime": done["train_runtime"],
  "host_reads_per_step": round(count("aten::_local_scalar_dense") / steps, 2),
  "stream_syncs_per_step": round(count("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize") / steps, 2),
  "d2h_copies_per_step": round(count("Memcpy DtoH (Device -> Pinned)", "Memcpy DtoH (Device -> Pageable)") / steps, 2),
  "top": [(e.key, round(getattr(e, sort) / 1000 / steps, 2)) for e in sorted(prof.key_averages(), key=lambda e: -getattr(e, sort))[:12]]}}
print("SUMMARY " + json.dumps(summary))
"""
        rc, text = self.sh(name, [sys.executable, "-c", code], self.env(), 400)
        line = next((line for line in reversed(text.splitlines()) if line.startswith("SUMMARY ")), None)
        self.results["runs"][name] = json.loads(line[len("SUMMARY "):]) if line else {"rc": rc, "tail": text[-2000:]}
        (self.out / f"{name}.txt").write_text(text[-30000:])
        self.save()

    # ---- 3. goals --------------------------------------------------------------------------

    def goals(self) -> dict:
        runs = self.results["runs"]

        def pair(mp: str, lf: str, key: str):
            a, b = runs.get(mp), runs.get(lf)
            if isinstance(a, dict) and isinstance(b, dict) and a.get(key) and b.get(key):
                return round(a[key] / b[key], 3)
            return None

        goals = {
            "peak_ratio_pack (≤ 0.40)": pair("mp_pack", "lf_neat_pack", "peak_gb"),
            "peak_ratio_nopack (≤ 0.40)": pair("mp_nopack", "lf_nopack", "peak_gb"),
            "examples_per_s_ratio_pack (≥ 1.5)": pair("mp_pack", "lf_neat_pack", "examples_per_s"),
            "examples_per_s_ratio_nopack": pair("mp_nopack", "lf_nopack", "examples_per_s"),
            "final_loss_ratio_pack (≈ 1, within 2 %)": pair("mp_pack", "lf_neat_pack", "loss_last"),
            "fused_vs_plain_peak_ratio": pair("mp_pack", "mp_pack_plain", "peak_gb"),
            "fused_vs_plain_final_loss_ratio": pair("mp_pack", "mp_pack_plain", "loss_last"),
        }
        return goals

    # ---- plan ------------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, object]]:
        return [
            ("mp_pack", lambda: self.mp_run("mp_pack", True)),
            ("mp_pack_plain", lambda: self.mp_run("mp_pack_plain", True, {"fused_loss": False})),
            ("lf_neat_pack", lambda: self.lf_run("lf_neat_pack", {"packing": True, "neat_packing": True})),
            ("mp_nopack", lambda: self.mp_run("mp_nopack", False)),
            ("lf_nopack", lambda: self.lf_run("lf_nopack")),
            ("mp_pack_long", lambda: self.mp_run("mp_pack_long", True, ds="chatdoctor")),
            ("lf_neat_pack_long", lambda: self.lf_run("lf_neat_pack_long", {"packing": True, "neat_packing": True}, ds="chatdoctor")),
            ("mp_nopack_long", lambda: self.mp_run("mp_nopack_long", False, ds="chatdoctor")),
            ("lf_nopack_long", lambda: self.lf_run("lf_nopack_long", ds="chatdoctor")),
            ("mp_torchrun", lambda: self.mp_run("mp_torchrun", False, {"max_steps": 20}, launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"])),
            ("gen", self.gen_run),
            ("profile", self.profile_run),
            ("profile_plain", lambda: self.profile_run("profile_plain", {"fused_loss": False})),
            ("mp_compile", lambda: self.mp_run("mp_compile", True, {"torch_compile": True}, timeout=600)),
            ("mp_qlora", lambda: self.optional("mp_qlora", "bitsandbytes", lambda: self.mp_run("mp_qlora", True, {"quantization_bit": 4}))),
            ("mp_liger", lambda: self.optional("mp_liger", "liger_kernel", lambda: self.mp_run("mp_liger", True, {"use_liger_kernel": True}))),
            ("lf_liger", lambda: self.optional("lf_liger", "liger_kernel", lambda: self.lf_run("lf_liger", {"packing": True, "neat_packing": True, "enable_liger_kernel": True}))),
        ]

    def run(self) -> None:
        self.prepare()
        only = set(self.args.only.split(",")) if self.args.only else None
        started = time.time()
        for name, fn in self.plan():
            if only and name not in only:
                continue
            if self.cpu and name in ("mp_qlora", "mp_liger", "lf_liger", "mp_compile"):
                self.results["runs"][name] = "skipped: GPU only"
                self.save()
                continue
            if time.time() - started > self.args.budget:
                self.results["runs"][name] = "skipped: time budget"
                self.save()
                continue
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - one run's failure is recorded, the others go on
                self.results["runs"][name] = {"error": repr(exc)}
                self.save()
        log("done")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for results.json, runs.log, profile.txt")
    parser.add_argument("--n", type=int, default=4000, help="short examples (toyhom)")
    parser.add_argument("--n-long", type=int, default=1600, help="long examples (chatdoctor)")
    parser.add_argument("--only", default="", help="comma list of runs")
    parser.add_argument("--cpu", action="store_true", help="dry run on a CPU: tiny model, cutoff 256, fp32")
    parser.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET", "1e9")), help="seconds; later runs are skipped")
    parser.add_argument("--work", default=None, help="model, data and run folders (default OUT/work; the model is reused)")
    parser.add_argument("--list", action="store_true", help="print the run names and exit")
    args = parser.parse_args()
    bench = Bench(args)
    if args.list:
        print("\n".join(name for name, _ in bench.plan()))
        return 0
    bench.run()
    print(json.dumps(bench.results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
