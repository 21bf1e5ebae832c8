"""A config.json that declares far more than the weights beside it hold (porter/checks/declared_sizes.py): refused from
the headers, before any route builds a model from it, in seconds and little memory, exit 2 naming config.json,
the key and the value, nothing written at --out. Real models, shared layers included, still pass."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from porter.checks.declared_sizes import problems

GB = 2**30


def _bomb(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _porter_measured(*args, timeout: int = 120) -> tuple[int, str, float, float]:
    """`porter ARGS` in its own process, under a wrapper whose only children are porter and what porter starts:
    (exit code, output, seconds, peak RSS in bytes of porter or any process it started)."""
    script = ("import json, resource, subprocess, sys, time\n"
              "t = time.perf_counter()\n"
              "run = subprocess.run([sys.executable, '-m', 'porter.cli', *sys.argv[2:]], capture_output=True, text=True,\n"
              "                     timeout=float(sys.argv[1]))\n"
              "seconds = time.perf_counter() - t\n"
              "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
              "print(json.dumps([run.returncode, run.stdout + run.stderr, seconds, peak]))\n")
    run = subprocess.run([sys.executable, "-c", script, str(timeout), *map(str, args)], capture_output=True, text=True,
                         timeout=timeout + 30, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    code, text, seconds, peak = json.loads(run.stdout)
    return code, text, seconds, peak


def _assert_refused_quickly(code, text, seconds, peak, out: Path, *needles) -> None:
    assert code == 2, text
    for needle in ("config.json", *needles):
        assert needle in text, text
    assert "Traceback" not in text, text
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "a temporary folder was left behind"
    # before the check: 120 s and 2.9 GB and growing, with no output; now the headers alone (a Python process
    # with porter's light imports is ~50 MB)
    assert seconds < 10, f"{seconds:.1f} s"
    assert peak < 0.5 * GB, f"peak RSS {peak / GB:.2f} GB"


@pytest.fixture(scope="module")
def tiny_deberta(tmp_path_factory):
    """Outside porter's zoo: the ONNX route and `porter verify` build it with transformers."""
    from hf_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("hf") / "deberta-v2", "deberta-v2")


@pytest.fixture
def folders(tiny_bert, tiny_deberta):
    return {"bert": tiny_bert, "deberta-v2": tiny_deberta}


# -- the bomb, on every route that builds a model from config.json ---------------------------------------


@pytest.mark.parametrize("kind, target", [("bert", "tf"), ("deberta-v2", "tf"), ("deberta-v2", "onnx")],
                         ids=["direct-route-bert", "onnx-route-deberta", "to-onnx-deberta"])
def test_a_layer_count_bomb_is_refused_before_any_build(kind, target, folders, tmp_path):
    bomb = _bomb(folders[kind], tmp_path / "bomb", num_hidden_layers=100000)
    out = tmp_path / "out"
    measured = _porter_measured("convert", bomb, "--from", "torch", "--to", target, "--out", out)
    _assert_refused_quickly(*measured, out, "num_hidden_layers is 100000", "2 repeated block(s) (encoder.layer.*)",
                            "more than 64x")


@pytest.mark.parametrize("kind", ["bert", "deberta-v2"])
def test_verify_refuses_the_bomb_before_transformers_builds_it(kind, folders, tmp_path):
    bomb = _bomb(folders[kind], tmp_path / "bomb", num_hidden_layers=100000)
    report = tmp_path / "report"
    measured = _porter_measured("verify", bomb, folders[kind], "--report", report)
    _assert_refused_quickly(*measured, report, "num_hidden_layers is 100000")


LEGACY_TF = Path(__file__).parent / "fixtures" / "legacy_tf"


@pytest.mark.parametrize("fixture, key", [("bert", "num_hidden_layers"), ("bart", "encoder_layers")])
def test_a_transformers_4_tf_folder_bomb_is_refused(fixture, key, tmp_path):
    """tf_model.h5 folders: porter's Keras BERT (built with its variables), or transformers' torch class built on the
    meta device for the legacy scheme; before the check, BERT's build passed 2.6 GB in 60 s."""
    bomb = _bomb(LEGACY_TF / fixture, tmp_path / "bomb", **{key: 100000})
    out = tmp_path / "out"
    measured = _porter_measured("convert", bomb, "--from", "tf", "--to", "torch", "--out", out)
    _assert_refused_quickly(*measured, out, f"{key} is 100000", "2 repeated block(s)")
    if fixture == "bert":
        measured = _porter_measured("verify", bomb, LEGACY_TF / fixture, "--report", out)
        _assert_refused_quickly(*measured, out, f"{key} is 100000")


def test_a_vocab_size_bomb_is_refused(tiny_bert, tmp_path, cli):
    bomb = _bomb(tiny_bert, tmp_path / "bomb", vocab_size=10**9)
    code, text = cli("convert", bomb, "--from", "torch", "--to", "tf", "--out", tmp_path / "out")
    assert code == 2 and "config.json" in text and "vocab_size is 1000000000" in text and "memory is available" in text, text
    assert not (tmp_path / "out").exists()


def test_a_float_layer_count_is_still_named_by_the_zoo_check(tiny_bert, tmp_path, cli):
    bomb = _bomb(tiny_bert, tmp_path / "bomb", num_hidden_layers=1e5)
    code, text = cli("convert", bomb, "--from", "torch", "--to", "tf", "--out", tmp_path / "out")
    assert code == 2 and "num_hidden_layers must be a positive integer, not 100000.0 (float)" in text, text
    assert not (tmp_path / "out").exists()


# -- real models pass ----------------------------------------------------------------------------------


def test_real_tiny_folders_pass(tiny_bert, tiny_deberta, tmp_path):
    from hf_tiny import make_tiny

    from porter.readers.artifacts import detect
    from porter.checks.declared_sizes import check_artifact

    # a Whisper encoder saved alone keeps the decoder's vocab_size: no tensor of it, and no bomb
    whisper = make_tiny(tmp_path / "whisper-encoder", "whisper-encoder", vocab_size=51865)
    for folder in (tiny_bert, tiny_deberta, whisper, make_tiny(tmp_path / "t5", "t5-encoder")):
        check_artifact(detect(folder))


@pytest.mark.parametrize("model_type", ["albert", "t5", "whisper", "clip", "mllama", "hrm_text"])
def test_full_size_default_configs_pass(model_type):
    """transformers' default config of each, built on the meta device (no memory): its tensors' shapes as a
    checkpoint holds them. mllama's vision tower has learned position tables beside a rotary text model; HRM
    declares 8 layer slots per stored layer; ALBERT 12 layers over one."""
    import torch
    import transformers

    config = transformers.CONFIG_MAPPING[model_type]()
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(config)
    state = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()}
    assert problems(json.loads(config.to_json_string(use_diff=False)), shapes, dtypes, available=16 * GB) == []


def _albert_like(hidden=4096, ffn=16384):
    layer = "encoder.albert_layer_groups.0.albert_layers.0."
    return {"embeddings.word_embeddings.weight": (30000, 128), "embeddings.position_embeddings.weight": (512, 128),
            "encoder.embedding_hidden_mapping_in.weight": (hidden, 128),
            **{f"{layer}attention.{p}.weight": (hidden, hidden) for p in ("query", "key", "value", "dense")},
            f"{layer}attention.LayerNorm.weight": (hidden,), f"{layer}ffn.weight": (ffn, hidden),
            f"{layer}ffn_output.weight": (hidden, ffn)}


def test_shared_layers_pass():
    """ALBERT-xxlarge: 12 layers over one stored (0.9 GB), on a machine with 2 GB free."""
    config = {"model_type": "albert", "num_hidden_layers": 12, "num_hidden_groups": 1, "hidden_size": 4096,
              "intermediate_size": 16384, "vocab_size": 30000, "max_position_embeddings": 512}
    assert problems(config, _albert_like(), available=2 * GB) == []
    assert problems(dict(config, num_hidden_layers=64), _albert_like(), available=None) == []  # no memory figure
    found = problems(dict(config, num_hidden_layers=65), _albert_like(), available=None)
    assert len(found) == 1 and "num_hidden_layers is 65" in found[0] and "1 repeated block(s) (encoder.albert_layer_groups.*" in found[0]


# -- each limit, on shapes alone -----------------------------------------------------------------------


def _bert_like(layers=2, hidden=32, vocab=99, positions=64):
    shapes = {"embeddings.word_embeddings.weight": (vocab, hidden),
              "embeddings.position_embeddings.weight": (positions, hidden)}
    for i in range(layers):
        shapes.update({f"encoder.layer.{i}.attention.self.query.weight": (hidden, hidden),
                       f"encoder.layer.{i}.output.LayerNorm.weight": (hidden,)})
    return shapes


BERT = {"num_hidden_layers": 2, "hidden_size": 32, "vocab_size": 99, "max_position_embeddings": 64}


@pytest.mark.parametrize("changes, needle", [
    ({"num_hidden_layers": 129}, "num_hidden_layers is 129, but the weights hold 2 repeated block(s) (encoder.layer.*): more than 64x"),
    ({"text_config": dict(BERT, num_hidden_layers=100000)}, "text_config.num_hidden_layers is 100000"),
    ({"decoder": {"decoder_layers": 500}}, "decoder.decoder_layers is 500"),
    ({"hidden_size": 100000}, "hidden_size is 100000, but no tensor in the weights has that size, and the largest they hold is 99"),
    ({"vocab_size": 10**9}, "vocab_size is 1000000000, which no tensor in the weights has: one 1000000000 x 99 float32 matrix"),
    ({"max_position_embeddings": 2**30}, "max_position_embeddings is 1073741824, which no tensor in the weights has: more than 16777216"),
])
def test_each_limit_is_named(changes, needle):
    found = problems(dict(BERT, **changes), _bert_like(), available=16 * GB)
    assert len(found) == 1 and needle in found[0], found


def test_memory_limits():
    big = _bert_like(layers=2, hidden=4096, vocab=30000, positions=512)  # ~0.4 GB
    config = dict(BERT, hidden_size=4096, vocab_size=30000, max_position_embeddings=512)
    # up to 24 layers per stored one may be shared (no memory figure); beyond, they are built and must fit
    assert problems(dict(config, num_hidden_layers=48), big, available=GB) == []
    found = problems(dict(config, num_hidden_layers=60), big, available=GB)
    assert len(found) == 1 and "scaled to 60 need about" in found[0] and "memory is available" in found[0], found
    # a learned position table at 4M rows of its width 4096: 69 GB
    found = problems(dict(config, max_position_embeddings=2**22), big, available=16 * GB)
    assert len(found) == 1 and "learned position table at 4194304 rows" in found[0], found
    # a vocab_size of no stored tensor that fits (a Whisper encoder keeps the decoder's) passes
    assert problems(dict(config, vocab_size=51865), big, available=16 * GB) == []


def test_rotary_positions_and_odd_values_pass():
    """Llama 4 declares 10M positions and stores no table; wrong types are named by the checks that refuse them
    today (hf_config.check_sizes, the zoo's check_config, transformers' strict fields: tests/test_clean_errors.py)."""
    rotary = {k: v for k, v in _bert_like().items() if "position" not in k}
    assert problems(dict(BERT, max_position_embeddings=10_485_760), rotary, available=16 * GB) == []
    for value in ("100000", 1e5, True, -1, None, [2, 2]):
        assert problems(dict(BERT, num_hidden_layers=value, max_position_embeddings=value), _bert_like()) == []
