"""The verifiers' CUDA paths, on this CPU-only machine: what can be shown without a GPU. `--device cuda` is refused
where torch or TensorFlow cannot see one (TensorFlow would otherwise place its ops on the CPU silently and the report
would call it a GPU run), TensorFlow's device follows cuda:N, and a report on a GPU says where each side's outputs
were computed. None of this has run on a GPU (README: "GPU")."""

from __future__ import annotations

import numpy as np
import pytest

from porter.errors import PorterError


class _FakeTF:
    """A TensorFlow that lists ``n`` GPUs (list_physical_devices only)."""

    def __init__(self, n):
        gpus = [type("Dev", (), {"name": f"/physical_device:GPU:{i}"})() for i in range(n)]
        self.config = type("Config", (), {"list_physical_devices": staticmethod(lambda kind: gpus if kind == "GPU" else [])})()


def test_tensorflow_device_follows_cuda_index():
    from porter.verifiers.runners.tf_device import tf_device

    assert tf_device(_FakeTF(0), "cpu") == "/CPU:0"
    assert tf_device(_FakeTF(2), "cuda") == "/GPU:0"
    assert tf_device(_FakeTF(2), "cuda:1") == "/GPU:1"
    with pytest.raises(PorterError) as err:
        tf_device(_FakeTF(2), "cuda:2")
    assert "TensorFlow sees 2 GPU(s)" in err.value.message and "GPU:1" in err.value.message


def test_a_gpu_tensorflow_cannot_see_is_refused_not_run_on_the_cpu(tiny_bert_tf):
    """The SavedModel runner asked for cuda where TensorFlow lists no GPU: exit 2 naming the fix, never a CPU run
    reported as a GPU one (TensorFlow's soft placement would run /GPU:0 ops on the CPU)."""
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees a GPU here")
    from porter.verifiers.runners import open_runner

    with pytest.raises(PorterError) as err:
        with open_runner(tiny_bert_tf, device="cuda"):
            pass
    assert "TensorFlow sees 0 GPU(s)" in err.value.message, err.value.message
    assert "tensorflow[and-cuda]" in err.value.hint and "--device cpu" in err.value.hint


def test_runner_records_where_tensorflow_computed(tiny_bert_tf):
    from porter.verifiers.runners import open_runner

    ids = np.array([[5, 6, 7]], dtype=np.int32)
    with open_runner(tiny_bert_tf, device="cpu") as runner:
        runner.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        assert runner.placed == "CPU:0", runner.placed


def test_verify_on_cuda_without_a_gpu_exits_2(tiny_bert, tiny_bert_tf, cli):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    code, text = cli("verify", tiny_bert, tiny_bert_tf, "--device", "cuda")
    assert code == 2 and "no CUDA device is visible" in text and "--device cpu" in text, text
    assert "Traceback" not in text


def test_report_on_a_gpu_says_where_each_side_ran():
    """The note a --device cuda report carries, from the runners' own placement (a stand-in pair here)."""
    from porter.verifiers.equivalence import run_equivalence
    from porter.verifiers.runners.base import Runner

    class Stub(Runner):
        def __init__(self, name, placed):
            super().__init__(name, device="cuda")
            self.input_names, self.output_names, self._placed = ["x"], ["y"], placed

        def infer(self, feeds):
            self.placed = self._placed
            return {"y": np.asarray(feeds["x"], dtype=np.float32) * 2}

    feeds = [{"x": np.arange(6, dtype=np.float32).reshape(2, 3)}]
    result = run_equivalence(Stub("torch", None), Stub("tf", "GPU:0"), feeds, atol=1e-6, rtol=0)
    assert "device cuda: reference on cuda, candidate on GPU:0" in result.notes, result.notes
    cpu = run_equivalence(Stub("torch", "CPU:0"), Stub("tf", "CPU:0"), feeds, atol=1e-6, rtol=0)
    assert any("candidate on CPU:0" in n for n in cpu.notes)  # a silent CPU fallback would be in plain sight
