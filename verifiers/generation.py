"""Verification by generation: a causal LM's SavedModel generates, through its ``prefill`` and ``decode`` signatures
only, the tokens transformers' ``generate(do_sample=False)`` gives on the source model.

At least 3 prompts of different lengths (token ids inside the vocabulary) are right-padded into one batch, so
decode's per-row positions are exercised; ``new_tokens`` (32) greedy tokens each, generated in a fresh process that
imports only TensorFlow (runners/generation_child.py). transformers generates each prompt alone (batch 1, no
padding, eos disabled so every row runs the full length). Passed when, for every prompt, the tokens are equal and
every step's logits are within the logits tolerance (fp32: atol 1e-4, rtol 1.3e-6, as ``porter verify``).
A token that differs where the reference's two best logits are within that tolerance of each other is a
near-tie: either token is right within the tolerance; it is reported (with the steps compared up to it) and
does not fail the check. Logits are compared up to the first divergence (after it the two sides continue from
different tokens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from porter.errors import PorterError

CHILD = Path(__file__).with_name("runners") / "generation_child.py"  # TensorFlow only: the SavedModel
LITERT_CHILD = Path(__file__).with_name("runners") / "generation_litert_child.py"  # ai_edge_litert only: the .tflite
NEW_TOKENS = 32
PROMPT_LENGTHS = (3, 8, 13)


@dataclass
class PromptResult:
    length: int
    tokens_matched: int  # equal tokens from the start
    new_tokens: int
    first_divergence: int | None  # step of the first differing token (None: all equal)
    near_tie: bool  # the divergence is at a step where the reference's top-2 logits are within atol
    worst_step: int
    max_abs: float  # worst logits difference over the steps compared
    passed: bool


@dataclass
class GenerationResult:
    prompts: list[PromptResult] = field(default_factory=list)
    atol: float = 0.0
    rtol: float = 0.0
    reference: str = "transformers generate(do_sample=False), float32"
    candidate: str = "SavedModel prefill + decode, greedy, in a TensorFlow-only process"
    child: dict = field(default_factory=dict)
    seconds: float = 0.0
    tflite: "GenerationResult | None" = None  # the .tflite's own generation, where one was written

    @property
    def passed(self) -> bool:
        return bool(self.prompts) and all(p.passed for p in self.prompts) and (self.tflite is None or self.tflite.passed)

    def __bool__(self) -> bool:
        return self.passed

    def worst(self) -> PromptResult:
        return max(self.prompts, key=lambda p: p.max_abs)

    def summary(self) -> str:
        matched = sum(p.tokens_matched for p in self.prompts)
        total = sum(p.new_tokens for p in self.prompts)
        w = self.worst()
        own = bool(self.prompts) and all(p.passed for p in self.prompts)
        what = "the .tflite's prefill_<len> + decode" if "LiteRT" in self.candidate else "prefill + decode"
        line = (f"generation ({'passed' if own else 'FAILED'}): {what}, greedy, prompts of "
                f"{', '.join(str(p.length) for p in self.prompts)} tokens: {matched}/{total} tokens equal to transformers' "
                f"generate; worst logits step {w.worst_step} (prompt of {w.length}): {w.max_abs:.3g} (atol {self.atol:g})")
        diverged = [p for p in self.prompts if p.first_divergence is not None]
        if diverged:
            line += "; first divergence: " + ", ".join(
                f"prompt of {p.length} at step {p.first_divergence}" + (" (near-tie)" if p.near_tie else "") for p in diverged)
        return line

    def summaries(self) -> list[str]:
        """One line for the SavedModel, one for the .tflite where one was written."""
        return [self.summary()] + ([self.tflite.summary()] if self.tflite is not None else [])

    def problems(self) -> list[str]:
        out = [] if self.tflite is None else [f"{p} (.tflite)" for p in self.tflite.problems()]
        for p in self.prompts:
            if p.passed:
                continue
            if p.first_divergence is not None and not p.near_tie:
                out.append(f"generation: prompt of {p.length} tokens: token {p.first_divergence} differs from transformers' "
                           f"generate ({p.tokens_matched}/{p.new_tokens} equal)")
            if p.max_abs > self.atol:
                out.append(f"generation: prompt of {p.length} tokens: logits at step {p.worst_step} differ by {p.max_abs:.3g} "
                           f"(atol {self.atol:g})")
        return out

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reference": self.reference, "candidate": self.candidate, "atol": self.atol,
                "rtol": self.rtol, "prompt_lengths": [p.length for p in self.prompts],
                "tokens_matched": sum(p.tokens_matched for p in self.prompts),
                "tokens": sum(p.new_tokens for p in self.prompts),
                "prompts": [asdict(p) for p in self.prompts], "child": self.child, "seconds": round(self.seconds, 2),
                **({"tflite": self.tflite.to_dict()} if self.tflite is not None else {})}


def plan(cache_len: int, new_tokens: int = NEW_TOKENS, lengths=PROMPT_LENGTHS, max_prompt: int | None = None) -> tuple[list[int], int]:
    """(prompt lengths, new tokens) that fit in the cache: the longest prompt + its new tokens <= cache_len
    (``max_prompt``: the longest prompt a .tflite's prefill_<len> takes)."""
    new = min(new_tokens, max(1, cache_len - max(lengths)))
    room = cache_len - new if max_prompt is None else min(cache_len - new, max_prompt)
    fitted = sorted({max(1, min(n, room - (len(lengths) - 1 - i))) for i, n in enumerate(lengths)})
    return fitted, new


PROMPTS_LIMIT = 1 << 20  # a prompt file is token ids, not a corpus: 1 MB


def read_prompts(path, vocab: int, cache_len: int, max_prompt: int | None = None) -> list[list[int]]:
    """``--prompts FILE``: token ids to generate from instead of porter's random ones (no tokenizer: ids). A JSON
    list of prompts, each a non-empty list of ints in [0, vocab); every prompt at most ``max_prompt`` (the longest
    .tflite prefill) and short enough to leave at least one new token in the cache. Anything else exits 2 naming the
    prompt, the value and the limit."""
    from porter.checks.model_files import read_json

    data = read_json(path, size_limit=PROMPTS_LIMIT, what="--prompts")
    where = f"--prompts {path}"
    if not isinstance(data, list) or not data:
        raise PorterError(f"{where} holds a JSON {type(data).__name__}, not a non-empty list of prompts",
                          hint='write a JSON list of token-id lists, e.g. [[1, 2, 3], [4, 5]]')
    longest = min(cache_len - 1, max_prompt if max_prompt is not None else cache_len - 1)
    problems = []
    for i, ids in enumerate(data):
        if not isinstance(ids, list) or not ids:
            problems.append(f"prompt {i}: a {type(ids).__name__ if ids != [] else 'empty list'}, not a non-empty list of token ids")
            continue
        bad = next((t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            problems.append(f"prompt {i}: token id {bad!r} is outside the vocabulary [0, {vocab})")
        if len(ids) > longest:
            what = "the longest --prefill-lengths" if max_prompt is not None and max_prompt < cache_len - 1 else "max_cache_len - 1"
            problems.append(f"prompt {i}: {len(ids)} tokens, past {what} ({longest})")
    if problems:
        raise PorterError(f"{where} does not fit the model", problems=problems[:20],
                          hint=f"token ids in [0, {vocab}), prompts of 1 to {longest} tokens")
    return data


def prompts(vocab: int, lengths, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=n).tolist() for n in lengths]


def reference(source, prompt_ids, new_tokens: int, dtype: str | None = None, loader=None) -> list[tuple[list[int], np.ndarray]]:
    """transformers' greedy generate on the source, one prompt at a time: (tokens, logits (new, vocab)) per prompt
    (``loader(source, dtype)``: the model; default the direct route's transformers loader)."""
    from porter.process.frameworks import torch

    torch_ = torch()
    if loader is None:
        from porter.zoo.keras_hub.entry import load_torch as loader
    model = loader(source, dtype)
    model.generation_config.eos_token_id = None  # every prompt runs new_tokens steps
    out = []
    with torch_.no_grad():
        for ids in prompt_ids:
            g = model.generate(torch_.tensor([ids]), attention_mask=torch_.ones(1, len(ids), dtype=torch_.long),
                               max_new_tokens=new_tokens, do_sample=False, output_logits=True, use_cache=True,
                               return_dict_in_generate=True, pad_token_id=0)
            logits = np.stack([step[0].float().numpy() for step in g.logits])
            out.append((g.sequences[0, len(ids):].tolist(), logits))
    return out


def run_child(saved_model, prompt_ids, new_tokens: int, timeout: int = 600, child=CHILD) -> tuple[np.ndarray, np.ndarray, dict]:
    """(tokens (batch, new), logits (batch, new, vocab), the child's report): the prompts right-padded in one batch
    (``child``: CHILD for a SavedModel, LITERT_CHILD for a .tflite)."""
    batch, seq = len(prompt_ids), max(map(len, prompt_ids))
    ids, mask = np.zeros((batch, seq), np.int32), np.zeros((batch, seq), np.int32)
    for r, p in enumerate(prompt_ids):
        ids[r, : len(p)], mask[r, : len(p)] = p, 1
    with tempfile.TemporaryDirectory(prefix="porter-generate-") as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, input_ids=ids, attention_mask=mask, new_tokens=np.int32(new_tokens))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        env.pop("PYTHONPATH", None)
        # the child runs in its own temporary folder: a relative --out must reach it absolute
        proc = subprocess.run([sys.executable, "-P", str(child), str(Path(saved_model).resolve()), str(src), str(dst)], env=env, cwd=tmp,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not dst.exists():
            tail = [s for s in proc.stderr.splitlines() if s.strip()][-12:]
            raise PorterError(f"the generation process ({child.name}: prefill + decode of {saved_model}) exited {proc.returncode}",
                              problems=tail)
        with np.load(dst, allow_pickle=False) as z:
            tokens, logits = z["tokens"], z["logits"]
    return tokens, logits, json.loads(proc.stdout.strip().splitlines()[-1])


def compare(ref, tokens, logits, lengths, atol: float, rtol: float) -> list[PromptResult]:
    out = []
    for r, ((want, ref_logits), n) in enumerate(zip(ref, lengths)):
        got = tokens[r].tolist()
        diverge = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), None)
        upto = len(want) if diverge is None else diverge + 1  # the divergence step's logits are still comparable
        diff = np.abs(ref_logits[:upto].astype(np.float64) - logits[r, :upto].astype(np.float64))
        bad = (diff > atol) & (diff > rtol * np.abs(ref_logits[:upto]))
        worst = int(np.argmax(diff.max(axis=-1)))
        near_tie = False
        if diverge is not None:
            top2 = np.sort(ref_logits[diverge])[-2:]
            near_tie = bool(top2[1] - top2[0] <= atol)
        max_abs = float(diff.max())
        out.append(PromptResult(length=n, tokens_matched=upto - (diverge is not None), new_tokens=len(want),
                                first_divergence=diverge, near_tie=near_tie, worst_step=worst, max_abs=max_abs,
                                passed=not bad.any() and (diverge is None or near_tie)))
    return out


def verify_generation(source, saved_model, config: dict, cache_len: int, atol=None, rtol=None,
                      reference_dtype: str | None = None, seed: int = 0, tflite=None, max_prompt=None,
                      loader=None, prompt_ids=None) -> GenerationResult:
    """Greedy tokens of the SavedModel's prefill/decode (TensorFlow-only child) against transformers' generate;
    ``tflite``: also the .tflite's prefill_<len>/decode (LiteRT-only child), as ``result.tflite``; ``prompt_ids``:
    the user's prompts (read_prompts), else random ids at PROMPT_LENGTHS."""
    from porter.verifiers.compare import DEFAULT_TOLERANCES, FP32_LOGITS_ATOL, default_pair_tolerance, scaled_atol

    t0 = time.perf_counter()
    if prompt_ids is None:
        lengths, new = plan(cache_len, max_prompt=max_prompt)
        prompt_ids = prompts(int(config["vocab_size"]), lengths, seed)
    else:
        lengths = [len(p) for p in prompt_ids]
        new = min(NEW_TOKENS, cache_len - max(lengths))
    ref = reference(source, prompt_ids, new, reference_dtype, loader)
    tokens, logits, child = run_child(saved_model, prompt_ids, new)
    lite = run_child(tflite, prompt_ids, new, child=LITERT_CHILD) if tflite else None
    written = config.get("dtype") if config.get("dtype") in DEFAULT_TOLERANCES else "float32"
    d_atol, d_rtol = default_pair_tolerance(reference_dtype or "float32", written)
    if atol is None:  # fp32: porter's logits atol; 16-bit: also HALF_ULPS ulps at the logits' scale (compare.py)
        scale = max(float(np.abs(r[1]).max()) for r in ref)
        atol = max(d_atol, FP32_LOGITS_ATOL, scaled_atol(written, scale) if written != "float32" else 0.0)
    rtol = d_rtol if rtol is None else float(rtol)
    result = GenerationResult(compare(ref, tokens, logits, lengths, atol, rtol), atol, rtol, child=child)
    if lite is not None:
        result.tflite = GenerationResult(compare(ref, lite[0], lite[1], lengths, atol, rtol), atol, rtol, child=lite[2],
                                         candidate=f"{Path(tflite).name} prefill_<len> + decode, greedy, in a LiteRT-only process")
    for r in (result, result.tflite):
        if r is not None and reference_dtype and reference_dtype != "float32":
            r.reference = f"transformers generate(do_sample=False), {reference_dtype}"
    result.seconds = time.perf_counter() - t0
    return result
