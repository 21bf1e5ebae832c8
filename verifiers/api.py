"""``porter.verify``: any two artifacts, any formats, compared output by output at several input shapes.

Runners load the two artifacts; one input set (generated or read from .npz) feeds both,
with the candidate's copy transposed where a layout is declared; every output is compared
(compare.py); on failure the first diverging layer is localised where the pair is a direct-route
zoo model; latency parity is measured on request. ``porter convert`` and ``porter check`` call this.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from porter.process import progress
from porter.errors import PorterError
from porter.checks.model_files import read_json_if_present
from porter.checks.path_errors import require_file
from porter.verifiers import layout as layouts
from porter.verifiers.inputs import InputSets, generate, load_npz, zoo_of
from porter.verifiers.pairing import Renamed, pair, parse_map
from porter.verifiers.result import VerificationResult


def verify(
    reference,
    candidate,
    *,
    inputs=None,
    atol: float | None = None,
    rtol: float | None = None,
    per_output_atol: dict | None = None,
    per_output_rtol: dict | None = None,
    allow_degenerate: bool = False,
    latency: bool = False,
    max_latency_ratio: float | None = None,
    device: str = "cpu",
    threads: int | None = None,
    layout=None,
    route: str | None = None,
    shapes=None,
    localise: bool = True,
    latency_budget_s: float | None = None,
    name_map=None,
    allow_nonfinite: bool = False,
    trust_model_code: bool = False,
    expected=None,
    reference_dtype: str | None = None,
    candidate_options: dict | None = None,
    fresh_process: bool = False,
) -> VerificationResult:
    """Compare ``candidate`` against ``reference`` (paths); the result is truthy when they agree.

    ``inputs``: an .npz file (see porter.verifiers.inputs), a list of feeds (dicts of arrays) or an InputSets;
    ``layout``: e.g. "nhwc-to-nchw" or ["x=nchw-to-nhwc"] (see porter.verifiers.layout);
    ``shapes``: (batch, sequence) pairs replacing the default 2 x 2 for generated inputs;
    ``name_map``: reference name -> candidate name (or ["REF=CAND"]) where the names differ (see pairing.py).
    ``allow_nonfinite``: run models whose weights hold NaN/Inf (refused by default); non-finite outputs still fail.
    ``trust_model_code``: import a model.py that porter did not write, or that changed since (refused by default).
    ``reference_dtype``: load a transformers (zoo) reference in this float dtype instead of float32
    (porter/resources/reference_plan.py: a 16-bit reference where float32 does not fit in memory).
    ``candidate_options``: runner options for the candidate only, e.g. {"isolated": True} to run a .tflite by
    LiteRT alone in a fresh process (runners/litert_isolated.py).
    ``fresh_process``: run the candidate by its own runtime alone in a fresh process wherever porter has one for it
    (runners/runtime_isolated.fresh_candidate_options; `porter verify` and `porter check` ask for it), unless
    PORTER_FRESH_PROCESS=0, --latency or a GPU device keeps it in this process.
    Raises PorterError on bad input (missing file, unknown format, inputs or outputs that do not match)."""
    from porter.readers.artifacts import detect

    from porter.checks.numerics import check_numeric_options

    check_numeric_options(atol=atol, rtol=rtol, per_output_atol=per_output_atol, per_output_rtol=per_output_rtol,
                          max_latency_ratio=max_latency_ratio, latency_budget_s=latency_budget_s, threads=threads)
    if expected is not None:  # recorded outputs are the reference: REFERENCE is named, not run
        from porter.checks.path_errors import require_path
        from porter.verifiers.recorded import verify_recorded

        require_path(reference)
        result = verify_recorded(candidate, expected, inputs, atol=atol, rtol=rtol, allow_degenerate=allow_degenerate,
                                 route=route, allow_nonfinite=allow_nonfinite)
        result.notes.append(f"{reference} was not run: its recorded outputs stand for it")
        return result
    ref_art, cand_art = detect(reference), detect(candidate)  # a missing or unknown path fails here, before any import
    _check_device(device)
    if isinstance(inputs, (str, Path)):
        require_file(inputs, "--inputs", ".npz", hint="an .npz of input arrays (keys: NAME or SET/NAME)")
    declared = layouts.resolve(layout, ref_art.path, cand_art.path)
    latency = latency or max_latency_ratio is not None
    if latency and not threads:
        threads = os.cpu_count()  # both sides get the same intra-op count, always stated in the report
    if threads:
        from porter.process.frameworks import set_threads

        set_threads(threads)
    options = {"threads": threads} if threads else {}
    if trust_model_code:
        options["trust_model_code"] = True
    if allow_nonfinite:  # runners that read weights refuse NaN/Inf in them unless told
        options["allow_nonfinite"] = True
    name_map = parse_map(name_map)
    if fresh_process and candidate_options is None:
        from porter.verifiers.runners.runtime_isolated import fresh_candidate_options

        candidate_options = fresh_candidate_options(cand_art, latency, device)
    ref_options = dict(options, reference_dtype=reference_dtype) if reference_dtype else options
    with _loaded(ref_art, "reference", device, ref_options) as ref, _loaded(cand_art, "candidate", device,
                                                                               {**options, **(candidate_options or {})}) as cand:
        pairing = pair(ref, cand, name_map)
        if pairing.renames:
            cand = Renamed(cand, pairing)
        info = zoo_of(ref) or zoo_of(cand)
        if isinstance(inputs, (str, Path)):
            sets = load_npz(inputs, ref, info)
        elif isinstance(inputs, InputSets):  # feeds with the caller's account of where they came from
            sets = inputs
        elif inputs is not None:
            sets = InputSets([dict(f) for f in inputs], ["inputs: given by the caller"])
        else:
            sets = generate(ref, info, shapes)
        feeds = sets.feeds
        result = _equivalence(ref, cand, feeds, declared, info, atol, rtol, per_output_atol, per_output_rtol, allow_degenerate,
                              reused=latency)
        _unique_labels(result)
        result.route = route or _route_of(cand_art.path) or _route_of(ref_art.path)
        result.notes[:0] = sets.notes + pairing.notes
        if (candidate_options or {}).get("isolated") and getattr(cand, "runtime", None):
            result.notes.append(f"candidate run by {cand.runtime} in a fresh process (nothing of porter imported there)")
        moved = {k: pair for k, pair in declared.items() if pair[0] != pair[1]}
        if moved:
            result.notes.append(f"layout: {layouts.describe(moved)} (the candidate's inputs are transposed)")
        if info is not None and info.config.get("porter_pooler_placeholder"):  # zoo/keras_hub/plain.py
            result.notes.append("pooler_output: not compared (a zero placeholder: keras-hub's XLMRobertaBackbone has no pooler)")
        if localise and not result.equivalent and info is not None:
            _localise(result, ref, cand, feeds, info)
        if latency:
            _latency(result, ref, cand, feeds, declared, info, max_latency_ratio, threads, device, latency_budget_s)
            tf_threads = result.latency["threads"].get("tensorflow")
            if tf_threads not in (None, threads) and not (tf_threads == 0 and threads == os.cpu_count()):
                result.notes.append(f"TensorFlow was already running with {tf_threads or 'all'} intra-op threads (it cannot change once started); torch got {threads}")
    return result


def _latency(result, ref, cand, feeds, declared, info, max_ratio, threads, device, budget_s) -> None:
    """Interleaved paired timing at the served shape and the largest verified one (see latency.py)."""
    from porter.verifiers.latency import latency_parity
    from porter.verifiers.latency_shapes import latency_shapes

    shapes = [(label, role, feed, layouts.apply(feed, declared))  # transposed once, outside the timed region
              for label, role, feed in latency_shapes(ref, info, feeds, result.notes)]
    with progress.step(f"timing both models, interleaved, at {', '.join(s[0] for s in shapes)}"):
        result.latency = latency_parity(_Guarded(ref), _Guarded(cand, None, "candidate"), shapes, max_ratio=max_ratio,
                                        threads=threads, device=device, notes=result.notes,
                                        **({"budget_s": budget_s} if budget_s else {}))


@contextlib.contextmanager
def _loaded(artifact, side: str, device: str, options: dict):
    """open_runner(...) as a context manager, its loading shown as a progress step."""
    from porter.verifiers.runners import open_runner

    runner = open_runner(artifact, device=device, **options)
    from porter.output.outdir import shown  # a conversion's staging folder is named by its --out

    with progress.step(f"loading the {side}: {shown(artifact.path)}"):
        runner.activate()
    try:
        yield runner
    finally:
        runner.deactivate()


class _Guarded:
    """A runner seen through a declared layout; a crash on the inputs becomes a clear PorterError."""

    def __init__(self, runner, declared=None, side="reference"):
        self.inner, self.declared, self.side = runner, declared or {}, side

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, feed):
        feed = layouts.apply(feed, self.declared)
        try:
            return self.inner.infer(feed)
        except PorterError:
            raise
        except Exception as exc:
            shapes = ", ".join(f"{k} {np.shape(v)} {np.asarray(v).dtype}" for k, v in feed.items())
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PorterError(
                f"the {self.side} ({self.inner.name}) could not run the inputs [{shapes}]: {first[:300]}",
                hint="check --inputs (names, dtypes, shapes) and --layout",
            ) from None


def _equivalence(ref, cand, feeds, declared, info, atol, rtol, per_atol, per_rtol, allow_degenerate, reused=True) -> VerificationResult:
    from porter.verifiers.equivalence import run_equivalence

    if not feeds:
        raise PorterError("no input sets to run")
    per_output: dict = {}
    for key, table in (("atol", per_atol), ("rtol", per_rtol)):
        for name, value in (table or {}).items():
            if name not in ref.output_names:
                raise PorterError(f"--{key} {name}=... names no output of {ref.name}", hint=f"its outputs: {', '.join(ref.output_names)}")
            per_output.setdefault(name, {})[key] = float(value)
    missing = [n for n in cand.input_names if n not in feeds[0]]
    if cand.input_names and missing and not info:
        raise PorterError(
            f"the candidate ({cand.name}) takes inputs the reference does not: {missing}",
            problems=[f"reference inputs: {sorted(ref.input_names)}", f"candidate inputs: {sorted(cand.input_names)}"],
        )
    defined = {}
    if info is not None:
        defined = {o: m for o, m in info.entry.defined_where.items() if o in ref.output_names and all(m in f for f in feeds)}
    return run_equivalence(
        _Guarded(ref), _Guarded(cand, declared, "candidate"), feeds, atol=atol, rtol=rtol, per_output=per_output,
        allow_degenerate=allow_degenerate, defined_where=defined, reference_reused=reused,
    )


def _localise(result, ref, cand, feeds, info) -> None:
    from porter.verifiers.localise import localise

    index = next(i for i, s in enumerate(result.shapes) if not s.passed)
    failing = next(o for o in result.shapes[index].outputs if not o.passed)
    try:
        floor = failing.rule == "float64 floor"  # judged by noise_floor.py: its allowed error, as an atol
        atol, rtol = (failing.floor_bound, 0.0) if floor else (failing.atol, failing.rtol)
        result.localisation = localise(ref, cand, feeds[index], info, atol=atol, rtol=rtol, label=result.shapes[index].label)
    except Exception as exc:  # localisation explains a failure; it must never hide it
        result.notes.append(f"localisation could not run: {type(exc).__name__}: {exc}")


def _unique_labels(result) -> None:
    """Two input sets of one shape (real sentences and generated ids) get '4x21', '4x21 #2'."""
    seen: dict[str, int] = {}
    for shape in result.shapes:
        seen[shape.label] = seen.get(shape.label, 0) + 1
        if seen[shape.label] > 1:
            shape.label = f"{shape.label} #{seen[shape.label]}"


def _route_of(path) -> str | None:
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    written = read_json_if_present(folder / "porter_report.json", folder)
    return written.get("route") if isinstance(written, dict) else None


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not (device == "cuda" or device.startswith("cuda:")):
        raise PorterError(f"--device {device!r} is not one of cpu, cuda, cuda:N")
    from porter.process.frameworks import torch

    if not torch().cuda.is_available():
        raise PorterError(f"--device {device}: no CUDA device is visible on this machine", hint="use --device cpu")
