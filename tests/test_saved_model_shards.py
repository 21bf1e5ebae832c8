"""The SavedModel's variables are written in shards of at most SHARD_BYTES (porter/output/saved_model_shards.py); shrunk
here so a tiny model needs several, which load back as one checkpoint and verify against the source."""

from __future__ import annotations

import json

from porter.output import saved_model_shards


def _shards(folder):
    return sorted(p.name for p in (folder / "variables").glob("variables.data-*"))


def test_default_writes_one_shard_for_a_small_model(cli, tiny_bert, tmp_path):
    code, output = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(tmp_path / "tf"), "--no-verify")
    assert code == 0, output
    assert _shards(tmp_path / "tf") == ["variables.data-00000-of-00001"]


def test_small_shards_load_back_and_verify(cli, tiny_bert, tmp_path, monkeypatch):
    from porter.readers.checkpoints import open_torch_checkpoint

    source = open_torch_checkpoint(tiny_bert)
    largest = max(int(a.nbytes) for a in (source.get(k) for k in source.shapes))
    monkeypatch.setattr(saved_model_shards, "SHARD_BYTES", largest)  # each shard at most one big tensor
    out = tmp_path / "tf"
    code, output = cli("convert", str(tiny_bert), "--from", "torch", "--to", "tf", "--out", str(out))
    assert code == 0 and "verified" in output, output
    shards = _shards(out)
    assert len(shards) > 3 and all(s.endswith(f"-of-{len(shards):05d}") for s in shards)
    assert all((out / "variables" / s).stat().st_size <= largest for s in shards)
    report = json.loads((out / "porter_report.json").read_text())
    assert report["status"] == "passed"
