"""The config's completion with transformers' defaults, run in a child process beside the TensorFlow import
(porter/readers/config_completion.py): the same config, the same errors, the in-process path when the child fails,
and a direct torch -> tf `convert --no-verify` whose process never imports torch or transformers."""

import json
import sys

import pytest
from tests_support import frameworks_imported_by_cli

from porter.readers import config_completion
from porter import zoo
from porter.errors import PorterError


@pytest.fixture
def child_path(monkeypatch):
    """This test process holds transformers; make complete_beside take the child path anyway."""
    monkeypatch.setattr(config_completion, "in_process", lambda: False)


def _config(tiny_bert, **changes):
    return dict(json.loads((tiny_bert / "config.json").read_text()), **changes)


def test_the_child_completes_the_config_as_this_process_does(child_path, tiny_bert):
    config = _config(tiny_bert)
    entry = zoo.for_config(config)
    ran = []
    completed = config_completion.complete_beside(entry, config, lambda: ran.append(True))
    assert ran == [True]
    assert completed == entry.impl.full_config(config)
    assert completed["layer_norm_eps"] == 1e-12 and completed["hidden_act"] == "gelu"  # transformers' defaults


def test_a_config_transformers_rejects_gives_the_in_process_error(child_path, tiny_bert):
    config = _config(tiny_bert, initializer_range="x")
    entry = zoo.for_config(config)
    with pytest.raises(PorterError) as here:
        entry.impl.full_config(config)
    with pytest.raises(PorterError) as beside:
        config_completion.complete_beside(entry, config, lambda: None)
    assert type(beside.value) is type(here.value)
    assert beside.value.render() == here.value.render()
    assert "config.json is not a config transformers accepts: Validation error for field 'initializer_range'" in beside.value.render()


def test_a_child_that_fails_leaves_the_work_to_this_process(child_path, tiny_bert, monkeypatch):
    config = _config(tiny_bert)
    entry = zoo.for_config(config)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1 without an answer
    assert config_completion.complete_beside(entry, config, lambda: None) == entry.impl.full_config(config)


def test_the_direct_route_without_verification_never_imports_torch_or_transformers(tiny_bert, tmp_path):
    out = tmp_path / "out"
    args = ["convert", tiny_bert, "--from", "torch", "--to", "tf", "--no-verify", "--out", out]
    assert frameworks_imported_by_cli(args, timeout=300) == ["tensorflow"]
    written = json.loads((out / "config.json").read_text())
    assert written["layer_norm_eps"] == 1e-12 and written["hidden_size"] == _config(tiny_bert)["hidden_size"]
