"""The decode step of a causal LM's SavedModel (prefill/decode, zoo/keras_hub/kv_cache.py) against transformers'
eager model with its own DynamicCache, paired rounds, at batch 1 and 4.

    python benchmarks/kv_decode_latency.py OUT_DIR [--hidden 512 --layers 8 --cache 512 --rounds 5 --steps 16]
    python benchmarks/kv_decode_latency.py OUT_DIR --hidden 2048 --layers 16 --intermediate 8192 --vocab 128256 --cache 2048
        (Llama 3.2 1B's shape, random weights)

Builds a random-weight Llama (GQA) of the given size, converts it with `porter convert --no-verify
--max-cache-len CACHE`, prefills a 32-token prompt on both sides, then times one decode step (per-token latency):
each round runs `steps` decode steps on one side, then on the other (order alternating), in this one process.
Prints JSON: per batch size the median per-step seconds of each side and the median of the per-round ratios; and
each side's memory, measured apart in a fresh process that loads that side alone (peak RSS after loading and
prefilling, and after the timed decode steps at batch 4).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--cache", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--intermediate", type=int, default=None, help="default 2.75 x hidden")
    p.add_argument("--side", choices=("tf", "torch"), help=argparse.SUPPRESS)  # the memory child: one side alone
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of both sides (measured on this 2-core, "
                   "shared machine: torch at 2 threads under load spun to 0.6-1.5 s a step, 33 ms at 1)")
    a = p.parse_args()

    hf, tf_dir = a.out / "hf", a.out / "tf"
    if a.side:  # before torch is imported: the TensorFlow side's memory is its own
        return _memory_child(a, hf, tf_dir)
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    if not (tf_dir / "saved_model.pb").exists():
        config = transformers.LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                                          num_attention_heads=a.hidden // 64, num_key_value_heads=max(1, a.hidden // 256),
                                          intermediate_size=a.intermediate or int(a.hidden * 2.75),
                                          max_position_embeddings=max(2048, a.cache))
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).eval().save_pretrained(hf)
        porter = Path(sys.executable).with_name("porter")  # the venv's console script
        subprocess.run([str(porter), "convert", str(hf), "--from", "torch", "--to", "tf", "--out",
                        str(tf_dir), "--no-verify", "--force", "--max-cache-len", str(a.cache)], check=True)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    tm = transformers.LlamaForCausalLM.from_pretrained(hf).eval()
    saved = tf.saved_model.load(str(tf_dir))
    prefill, decode = saved.signatures["prefill"], saved.signatures["decode"]
    result = {"model": {"hidden": a.hidden, "layers": a.layers, "cache": a.cache, "prompt": a.prompt},
              "threads": {"torch": torch.get_num_threads(), "tf": a.threads}}
    rng = np.random.default_rng(0)
    result["parameters"] = sum(p.numel() for p in tm.parameters())
    for batch in (1, 4):
        ids = rng.integers(0, a.vocab, size=(batch, a.prompt)).astype(np.int32)
        out = prefill(input_ids=tf.constant(ids), attention_mask=tf.constant(np.ones_like(ids)))
        state = {k: v for k, v in out.items() if k.startswith("kv_cache_") or k == "cache_position"}
        token = np.full((batch, 1), 7, np.int32)
        with torch.no_grad():
            t_out = tm(torch.tensor(ids, dtype=torch.long), use_cache=True)
        past = t_out.past_key_values

        def tf_steps():
            s = state
            for _ in range(a.steps):
                s = {k: v for k, v in decode(input_ids=tf.constant(token), **s).items() if k != "logits"}

        def torch_steps():
            import copy

            cache = copy.deepcopy(past)  # not timed below: copied before the clock starts
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(a.steps):
                    tm(torch.tensor(token, dtype=torch.long), past_key_values=cache, use_cache=True,
                       cache_position=torch.tensor([a.prompt + i]))
            return time.perf_counter() - t0

        tf_steps(), torch_steps()  # warm
        tf_times, torch_times = [], []
        for r in range(a.rounds):
            for side in (("tf", "torch") if r % 2 == 0 else ("torch", "tf")):
                if side == "tf":
                    t0 = time.perf_counter()
                    tf_steps()
                    tf_times.append((time.perf_counter() - t0) / a.steps)
                else:
                    torch_times.append(torch_steps() / a.steps)
        result[f"batch_{batch}"] = {"tf_decode_s": statistics.median(tf_times), "torch_decode_s": statistics.median(torch_times),
                                    "ratio_median": statistics.median(t / s for t, s in zip(tf_times, torch_times))}
    del tm, saved, prefill, decode
    result["memory_mb"] = {side: _run_memory_child(side) for side in ("tf", "torch")}
    print(json.dumps(result, indent=2))


def _run_memory_child(side: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    """VmHWM (this process's own peak; ru_maxrss carries the parent's across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(a, hf: Path, tf_dir: Path) -> None:
    """One side alone: the peak RSS after loading + a batch-4 prefill, then after ``steps`` decode steps."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, a.vocab, size=(4, a.prompt)).astype(np.int32)
    token = np.full((4, 1), 7, np.int32)
    if a.side == "tf":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
        saved = tf.saved_model.load(str(tf_dir))
        out = saved.signatures["prefill"](input_ids=tf.constant(ids), attention_mask=tf.constant(np.ones_like(ids)))
        state = {k: v for k, v in out.items() if k != "logits"}
        loaded = _peak_mb()
        for _ in range(a.steps):
            state = {k: v for k, v in saved.signatures["decode"](input_ids=tf.constant(token), **state).items() if k != "logits"}
    else:
        import torch
        import transformers

        torch.set_num_threads(a.threads)
        tm = transformers.LlamaForCausalLM.from_pretrained(hf).eval()
        with torch.no_grad():
            past = tm(torch.tensor(ids, dtype=torch.long), use_cache=True).past_key_values
            loaded = _peak_mb()
            for i in range(a.steps):
                tm(torch.tensor(token, dtype=torch.long), past_key_values=past, use_cache=True,
                   cache_position=torch.tensor([a.prompt + i]))
    print(json.dumps({"after_load_and_prefill": round(loaded), "after_decode": round(_peak_mb())}))


if __name__ == "__main__":
    main()
