"""`porter convert MODEL --from torch --to tfjs`: the SavedModel `--to tf` writes -> tensorflowjs' converter (run
apart from porter's env, porter/routes/tfjs.py) -> a TF.js graph model, verified by @tensorflow/tfjs in Node.

tensorflowjs and @tensorflow/tfjs are not porter's dependencies (tensorflowjs' own requirements break `pip check`):
the `tfjs` fixture finds them where `python -m porter.routes.tfjs setup` puts them, and where they are missing runs
that setup once (pip --no-deps --target and npm into ~/.cache/porter/tfjs; network) unless PORTER_TFJS_SETUP=0.
Without them (or Node) the tests that need them skip, saying why; the refusals below run either way."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_hf_direct import make_checkpoint

HIDDEN_ATOL, LOGITS_ATOL = 1e-5, 1e-4


@pytest.fixture(scope="session")
def tfjs():
    from porter.errors import PorterError
    from porter.routes import tfjs

    try:
        return tfjs.locate()
    except PorterError as missing:
        if os.environ.get("PORTER_TFJS_SETUP") == "0":
            pytest.skip(f"tensorflowjs / Node / @tensorflow/tfjs not found and PORTER_TFJS_SETUP=0: {missing.render()}")
        try:
            return tfjs.setup(timeout=300)
        except Exception as exc:  # noqa: BLE001 - offline, no npm: the tests say why they did not run
            pytest.skip(f"`{tfjs.setup_command()}` failed ({type(exc).__name__}: {str(exc)[:300]}); "
                        f"missing: {missing.render()}")


def _report(out) -> dict:
    return json.loads((out / "porter_report.json").read_text())


def _families(tmp_path_factory):
    from conftest import TINY_BERT, make_hf_checkpoint
    from hf_tiny import make_tiny

    root = tmp_path_factory.mktemp("tfjs-src")
    return {
        "bert": lambda: make_hf_checkpoint(root / "bert", TINY_BERT),  # direct route, porter's Keras BERT (exact GELU)
        "vit": lambda: make_tiny(root / "vit", "vit"),  # graph route (ViTModel's pooler), exact GELU + tanh pooler
        "gpt2": lambda: make_checkpoint(root / "gpt2", "gpt2", False),  # direct route, keras-hub
        "llama": lambda: make_checkpoint(root / "llama", "llama", True, False),  # direct route, causal-LM logits
    }


@pytest.fixture(scope="module", params=["bert", "vit", "gpt2", "llama"])
def converted(request, tfjs, tmp_path_factory, cli):
    src = _families(tmp_path_factory)[request.param]()
    out = tmp_path_factory.mktemp(f"tfjs-{request.param}") / "js"
    code, text = cli("convert", src, "--from", "torch", "--to", "tfjs", "--out", out)
    return request.param, src, out, code, text


@pytest.fixture(scope="module")
def cli():
    from cli_runner import make_cli

    return make_cli()


def test_converts_and_runs_in_node_within_fp32_tolerance(converted):
    family, _, out, code, text = converted
    assert code == 0, text
    report = _report(out)
    assert report["to"] == "tfjs" and report["status"] == "passed", report.get("verification")
    assert report["route"] == ("graph" if family == "vit" else "direct")
    names = sorted(p.name for p in out.iterdir())
    assert "model.json" in names and "porter_report.json" in names and not any("saved_model" in n for n in names)
    section = report["tfjs"]
    assert section["tensorflowjs"] == "4.22.0" and "@tensorflow/tfjs 4.22.0" in section["runtime"]
    assert "Erfc" not in section["ops"]  # TF.js has no Erfc kernel: exact GELU arrives as 1 - Erf
    if family in ("bert", "vit"):
        assert section["rewritten"].get("Erfc -> 1 - Erf", 0) >= 1 and section["ops"]["Erf"] >= 1
    assert "Node" in report["comparison"]["candidate"]
    shapes = report["verification"]["shapes"]
    assert len(shapes) >= 2
    worst = report["verification"]["max_abs_error"]
    for name, err in worst.items():
        assert err <= (LOGITS_ATOL if name == "logits" else HIDDEN_ATOL), (name, err)
    print(f"{family}: max abs {worst} at {[s['label'] for s in shapes]}; timings {report['timings']}; "
          f"rewritten {section['rewritten']}")


def test_node_runner_at_a_shape_of_its_own(converted):
    """The TF.js model run again by the Node runner alone, at a shape verification did not use, against transformers."""
    import torch
    import transformers

    from porter.verifiers.runners import open_runner

    family, src, out, code, text = converted
    assert code == 0, text
    rng = np.random.default_rng(5)
    if family == "vit":
        feed = {"pixel_values": rng.normal(size=(2, 3, 32, 32)).astype(np.float32)}
    else:
        ids = rng.integers(0, 99, (2, 7))
        mask = np.ones_like(ids)
        mask[1, 4:] = 0
        feed = {"input_ids": ids, "attention_mask": mask}
        if family == "bert":
            feed["token_type_ids"] = np.zeros_like(ids)
    cls = transformers.AutoModelForCausalLM if family == "llama" else transformers.AutoModel
    with torch.no_grad():
        ref = cls.from_pretrained(src).eval()(**{k: torch.as_tensor(v) for k, v in feed.items()})
    with open_runner(out) as runner:
        assert runner.framework == "tfjs"
        got = runner.infer(feed)
    name = "logits" if family == "llama" else "last_hidden_state"
    valid = np.ones(feed.get("attention_mask", np.ones((2, 1))).shape, bool) if family == "vit" else feed["attention_mask"].astype(bool)
    diff = np.abs(getattr(ref, name).numpy() - got[name])
    err = float(diff[valid].max()) if family != "vit" else float(diff.max())
    assert err <= (LOGITS_ATOL if name == "logits" else HIDDEN_ATOL), err


def _saved_model(path, fn_body, shape=(None, 4)):
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
        def serve(self, x):
            return {"y": fn_body(tf, x, self.w)}

    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


def test_saved_model_source_converts_and_is_verified_against_itself(tfjs, tmp_path, cli):
    src = _saved_model(tmp_path / "sm", lambda tf, x, w: tf.tanh(tf.matmul(x, w) + 0.5))
    code, text = cli("convert", src, "--from", "tf", "--to", "tfjs", "--out", tmp_path / "js")
    assert code == 0, text
    report = _report(tmp_path / "js")
    assert report["status"] == "passed" and report["route"] == "tensorflowjs", report
    assert max(report["verification"]["max_abs_error"].values()) <= 1e-6


def test_ops_tfjs_lacks_exit_2_naming_them(tfjs, tmp_path, cli):
    src = _saved_model(tmp_path / "sm", lambda tf, x, w: tf.math.lgamma(tf.abs(x) + 1.0) + tf.math.digamma(tf.abs(x) + 1.0)
                       + tf.math.lgamma(tf.abs(x) + 2.0))
    code, text = cli("convert", src, "--from", "tf", "--to", "tfjs", "--out", tmp_path / "js")
    assert code == 2, text
    assert "Lgamma (x2)" in text and "Digamma (x1)" in text and "TF.js" in text, text
    assert not (tmp_path / "js").exists() and not any(p.name.startswith(".js") for p in tmp_path.iterdir())


def test_missing_node_or_tfjs_exits_2_naming_what_to_install(tmp_path, cli, monkeypatch, tiny_bert):
    monkeypatch.setenv("PORTER_NODE", str(tmp_path / "no-node"))
    monkeypatch.setenv("PORTER_TFJS_NODE_MODULES", str(tmp_path / "no-modules"))
    monkeypatch.setenv("PORTER_TFJS_PYTHON", str(tmp_path / "no-python"))
    code, text = cli("convert", tiny_bert, "--from", "torch", "--to", "tfjs", "--out", tmp_path / "js")
    assert code == 2, text
    flat = " ".join(text.split())
    assert "@tensorflow/tfjs 4.22.0" in flat and "npm install" in flat and "tensorflowjs==4.22.0" in flat, text
    assert "--no-deps --target" in flat and "python -m porter.routes.tfjs setup" in flat, text
    assert not (tmp_path / "js").exists()


def test_latency_and_from_tfjs_are_refused(tmp_path, cli, tiny_bert):
    code, text = cli("convert", tiny_bert, "--from", "torch", "--to", "tfjs", "--latency", "--out", tmp_path / "js")
    assert code == 2 and "--latency" in text, text
    assert not (tmp_path / "js").exists()
