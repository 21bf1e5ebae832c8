"""Recorded outputs as the reference (Polygraphy's --load-outputs): outputs that the original stack
produced on the user's inputs, kept as an .npz, compared by output name with the candidate's outputs
on the same inputs. Used where porter cannot run the original (a transformers 4.x TF checkpoint).
"""

from __future__ import annotations

import numpy as np

from porter.errors import PorterError
from porter.checks.path_errors import require_file


def _npz(path, flag: str) -> dict:
    from porter.checks.model_files import npz_arrays

    require_file(path, flag, ".npz", hint="an .npz of arrays keyed by name (numpy.savez)")
    return npz_arrays(path, flag)


class RecordedRunner:
    """A reference runner that answers the recorded inputs with the recorded outputs."""

    framework = "recorded"
    layout = "native"
    device = "cpu"

    def __init__(self, expected_path, feed: dict, outputs: dict):
        self.name = f"recorded outputs: {expected_path}"
        self.feed, self.outputs = feed, outputs
        self.input_names, self.output_names = list(feed), list(outputs)

    def infer(self, feeds):
        return dict(self.outputs)


class _Only:
    """The candidate seen through the recorded output names only (extra outputs are not compared)."""

    def __init__(self, runner, names):
        self.inner, self.output_names = runner, list(names)
        self.name, self.input_names, self.device = runner.name, runner.input_names, getattr(runner, "device", "cpu")

    def infer(self, feeds):
        out = self.inner.infer(feeds)
        return {k: out[k] for k in self.output_names}


def _feed(inputs: dict) -> dict:
    """Integer inputs as int64 (what every torch model indexes with); others as recorded."""
    return {k: v.astype(np.int64) if v.dtype.kind in "iu" else v for k, v in inputs.items()}


def verify_recorded(candidate, expected, inputs, *, atol=None, rtol=None, allow_degenerate=False,
                    route=None, allow_nonfinite=False):
    """Run ``candidate`` (a path) on ``inputs`` (.npz) and compare it with ``expected`` (.npz) by output name.
    Names or shapes that do not match are bad input (PorterError), not a failed check."""
    from porter.readers.artifacts import detect
    from porter.verifiers.equivalence import run_equivalence
    from porter.verifiers.runners import open_runner

    if inputs is None:
        raise PorterError(f"--expected {expected} needs the inputs it was recorded on",
                          hint="pass --inputs FILE.npz (the arrays the recorded outputs came from)")
    feed, recorded = _npz(inputs, "--inputs"), _npz(expected, "--expected")
    if not recorded:
        raise PorterError(f"--expected {expected} holds no arrays")
    options = {"allow_nonfinite": True} if allow_nonfinite else {}
    artifact = detect(candidate)
    runner = open_runner(artifact, device="cpu", **options)
    if artifact.format == "hf":  # the class config.json names (a task head), loaded strictly by transformers
        from porter.process.frameworks import torch

        runner.torch = torch()
        runner._activate_outside_zoo()
    else:
        runner.activate()
    try:
        unknown = sorted(set(feed) - set(runner.input_names)) if runner.input_names else []
        if unknown:
            raise PorterError(f"--inputs {inputs}: {', '.join(map(repr, unknown))} is not an input of the converted model",
                              problems=[f"its inputs: {sorted(runner.input_names)}"], hint="name the arrays after the model's inputs")
        got = runner.infer(_feed(feed))
        problems = [f"{name!r}: recorded, but the converted model has no such output" for name in recorded if name not in got]
        problems += [f"{name!r}: recorded {tuple(a.shape)}, the converted model gives {tuple(np.shape(got[name]))}"
                     for name, a in recorded.items() if name in got and tuple(a.shape) != tuple(np.shape(got[name]))]
        if problems:
            raise PorterError(f"--expected {expected} does not match the converted model's outputs",
                              problems=problems + [f"its outputs: {sorted(got)}"],
                              hint="record the outputs by the model's output names (last_hidden_state, logits ...) on the same --inputs")
        reference = RecordedRunner(expected, feed, recorded)
        mask = feed.get("attention_mask")
        # padded positions are undefined (implementations differ there), as for generated inputs
        defined = {n: "attention_mask" for n, a in recorded.items()
                   if mask is not None and a.ndim >= 2 and tuple(a.shape[:2]) == tuple(mask.shape)}
        result = run_equivalence(reference, _Only(runner, recorded), [_feed(feed)], atol=atol, rtol=rtol,
                                 allow_degenerate=allow_degenerate, route=route, defined_where=defined)
    finally:
        runner.deactivate()
    result.reference = reference.name
    result.notes.insert(0, f"reference: recorded outputs: {expected} (on inputs {inputs}); compared by output name")
    return result

