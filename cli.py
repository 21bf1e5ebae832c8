"""The `porter` command (installed as porter.cli). Frameworks are imported inside commands only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Literal, Optional

import typer

from porter.errors import PorterError

app = typer.Typer(
    name="porter",
    help="Move trained models between PyTorch and TensorFlow, and prove every move.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: TOML tables such as [[verify]] stay text, flags show no <bool>
    context_settings={"help_option_names": ["-h", "--help"]},
)
zoo_app = typer.Typer(help="Architectures porter knows on both sides.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(zoo_app, name="zoo")
LATENCY_UNSTABLE = 4  # exit code: equivalent, but a --max-latency-ratio gate too noisy to decide (0/1/2/3 keep their meaning)


def _print_version(value: bool) -> None:
    if value:
        from porter import __version__  # porter/__init__ imports no framework

        typer.echo(f"porter {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version, help="print porter's version and exit"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines on stderr (they are on by default)"),
):
    from porter.process import progress

    progress.enable(quiet=quiet)
    ctx.call_on_close(progress.disable)


def _echo(line: str, err: bool = False) -> None:
    """One line that names a path or a model's names: its control characters shown, so it stays one line."""
    from porter.checks import escape

    typer.echo(escape.console(line), err=err)


def _fail(exc: PorterError) -> None:
    typer.echo(f"error: {exc.render()}", err=True)
    if getattr(exc, "tool_output", "").strip():  # a tool's own log: kept aside, not the message
        from porter.process.crash import write_text_log

        typer.echo(f"(the tool's full output: {write_text_log('porter-tool-output', exc.tool_output)})", err=True)
    raise typer.Exit(exc.exit_code)


def _int_list(text, flag):
    """"8,32" -> [8, 32]; a value that is not a positive integer exits 2 naming it."""
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        _fail(PorterError(f"{flag} {text!r} is not a comma-separated list of integers", hint=f"e.g. {flag} 8,32"))
    return sorted(set(values)) or None


@app.command()
def convert(
    model: str = typer.Argument(..., metavar="MODEL", help="a zoo name (bert, roberta) or a path"),
    source: Literal["torch", "tf", "onnx"] = typer.Option(..., "--from", help="the model's framework"),
    target: Literal["tf", "torch", "onnx", "tflite", "tfjs"] = typer.Option(..., "--to", help="the framework to convert to"),
    checkpoint: Optional[Path] = typer.Option(None, help="weights for a zoo name (an HF folder)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: ./<model>-<to>)"),
    route: Literal["auto", "direct", "graph", "onnx"] = typer.Option(
        "auto", help="direct: zoo + mapping rules; graph: torch.export -> porter's ATen-to-TF converter (torch -> tf); "
                     "onnx: through ONNX; auto: direct when the zoo knows the model, else graph for torch -> tf "
                     "(onnx where an op has no converter), else onnx"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip the equivalence check"),
    force: bool = typer.Option(False, "--force", help="replace an existing --out"),
    atol: Optional[float] = typer.Option(None, help="absolute tolerance (default per dtype: fp32 1e-5)"),
    rtol: Optional[float] = typer.Option(None, help="relative tolerance (default per dtype: fp32 1.3e-6)"),
    layout: Optional[Literal["nhwc", "nchw"]] = typer.Option(
        None, help="the layout the converted model's image inputs take (default: the source's)"),
    inputs: Optional[Path] = typer.Option(
        None, "--inputs", help="verify on these arrays: an .npz (keys: NAME or SET/NAME), as for porter verify"),
    dtype: Optional[Literal["float32", "float16", "bfloat16"]] = typer.Option(
        None, "--dtype", help="the written weights' dtype (default: the source's own; direct route)"),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="convert weights holding NaN/Inf instead of refusing them (non-finite outputs still fail)"),
    expected: Optional[Path] = typer.Option(
        None, "--expected", help="verify against these recorded outputs (.npz by output name, recorded on --inputs) "
                                 "instead of running the source: for transformers 4.x TF checkpoints"),
    static_shapes: bool = typer.Option(
        False, "--static-shapes", help="accept a written model with dims fixed that the source takes at any size "
                                       "(ONNX and graph routes; otherwise verification fails)"),
    latency: bool = typer.Option(
        False, "--latency", help="after verifying, time the source and the written model as porter verify --latency does; "
                                 "the figures go into porter_report.json (latency) and the console"),
    xla: bool = typer.Option(
        False, "--xla", help="compile the SavedModel's signatures with XLA (jit_compile=True), verified as compiled "
                             "(direct route, --to tf)"),
    ignore_memory_estimate: bool = typer.Option(
        False, "--ignore-memory-estimate", help="go ahead where porter estimates (from the checkpoint's size, before "
                                                "loading) that the conversion and its verification need more memory than is available"),
    reference_dtype: Literal["auto", "float32", "checkpoint"] = typer.Option(
        "auto", "--reference-dtype", help="the dtype transformers' reference is verified in (direct route, torch -> tf): "
                                          "auto = float32 where porter's memory estimate says it fits, else a 16-bit "
                                          "checkpoint's own dtype (said in the report); checkpoint = that dtype always"),
    verify_blocks: bool = typer.Option(
        False, "--verify-blocks", help="direct route, torch -> tf, a decoder (llama, mistral, qwen2, qwen3, gemma, gpt2): "
                                       "also verify every transformer block in float32, one block of each model in memory "
                                       "at a time (taken by itself where a float32 reference does not fit)"),
    allow_flex: bool = typer.Option(
        False, "--allow-flex", help="--to tflite (graph route): keep TF ops TFLite has no built-in op for as Select-TF "
                                    "(Flex) ops, listed in the report; by default the .tflite holds built-in ops only "
                                    "and runs in plain LiteRT"),
    prefill_lengths: Optional[str] = typer.Option(
        None, "--prefill-lengths", help="--to tf, a causal LM (direct or graph route): also write model.tflite with prefill_<N> "
                                        "for each N (comma-separated prompt lengths) and decode, batch 1, litert-torch's "
                                        "names (kv_cache_k_<i>/kv_cache_v_<i>), built-in ops only; generation verified in LiteRT"),
    max_cache_len: Optional[int] = typer.Option(
        None, "--max-cache-len", help="--to tf, a causal LM (direct or graph route): the KV-cache length of the SavedModel's "
                                      "prefill/decode signatures (default: the model's position limit or 4096, whichever "
                                      "is smaller); generation through them is verified against transformers' generate"),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", help="--to tf, a causal LM: the generation check's prompts, a JSON list of token-id lists "
                                "(no tokenizer), e.g. [[1, 2, 3], [4, 5]] (default: 3 random prompts of 3, 8, 13 tokens)"),
    quantize: Optional[Literal["fp16", "dynamic-int8", "int8", "int16x8"]] = typer.Option(
        None, "--quantize", help="--to tflite: also write a quantized model_<mode>.tflite beside the float one (TFLite "
                                 "converter: fp16 weights; dynamic-int8 weights; int8 weights and activations, calibrated; "
                                 "int16x8 int8 weights and int16 activations, calibrated) "
                                 "and report its error apart from the conversion's: conversion (float vs source), "
                                 "quantization (quantized vs float), total (quantized vs source)"),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="--quantize int8|int16x8: calibration inputs, an .npz with one array per input name, samples "
                                    "along axis 0 (default: porter's generated inputs, said in the report)"),
    quantized_atol: Optional[float] = typer.Option(
        None, "--quantized-atol", help="--quantize: fail when the quantized model's max abs error vs the source is above X "
                                       "(the float conversion keeps the fp32 tolerances)"),
    min_cosine: Optional[float] = typer.Option(
        None, "--min-cosine", help="--quantize: fail when the cosine of the quantized model's outputs vs the source's is "
                                   "below C (default: fp16 0.9999, dynamic-int8 0.99, int8 0.98, int16x8 0.99)"),
):
    """Convert MODEL from one framework to another, then verify the two side by side."""
    from porter.conversion import convert as run

    try:
        result = run(
            model, source=source, target=target, checkpoint=checkpoint, out=out, route=route,
            verify=not no_verify, force=force, atol=atol, rtol=rtol, layout=layout, inputs=inputs,
            dtype=dtype, allow_nonfinite=allow_nonfinite, static_shapes=static_shapes, expected=expected, latency=latency, xla=xla,
            ignore_memory_estimate=ignore_memory_estimate, reference_dtype=reference_dtype, allow_flex=allow_flex,
            quantize=quantize, calibration=calibration, quantized_atol=quantized_atol, min_cosine=min_cosine,
            max_cache_len=max_cache_len, verify_blocks=verify_blocks, prefill_lengths=_int_list(prefill_lengths, "--prefill-lengths"),
            prompts=prompts,
        )
    except PorterError as exc:
        _fail(exc)
    status = "verified" if result.verification is not None and result.passed else result.report.get("status")
    reason = result.report.get("route_reason")
    _echo(f"wrote {result.out} (route: {result.route}{f' - {reason}' if reason else ''}, {status})")
    fixed = [d for d in result.report.get("static_dims") or () if "artifact" not in d]
    if fixed:
        from porter.routes.onnx_pipeline import static_dims_text

        _echo(f"static dims: the written model takes only {static_dims_text(fixed)}")
    if not result.passed:
        _echo(f"verification FAILED; the output is written and marked failed in {result.out}/porter_report.json", err=True)
        raise typer.Exit(1)


def _tolerances(values: List[str], flag: str) -> tuple[Optional[float], dict]:
    """['1e-5', 'last_hidden_state=2e-5'] -> (1e-5, {'last_hidden_state': 2e-5})."""
    overall, per_output = None, {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            x = float(number)
        except ValueError:
            raise PorterError(f"{flag} {value!r} is not a number or OUTPUT=NUMBER", hint=f"e.g. {flag} 1e-5 or {flag} last_hidden_state=2e-5") from None
        if name:
            per_output[name] = x
        else:
            overall = x
    return overall, per_output


def _shapes(values: List[str]):
    try:
        return [tuple(int(d) for d in v.lower().split("x")) for v in values] or None
    except ValueError:
        raise PorterError(f"--shape {values} is not BATCHxSEQ (e.g. --shape 2x8)") from None


VERIFY_HELP = """Compare CANDIDATE against REFERENCE (any two models, any formats) at several input shapes.

Formats: HF torch folder, SavedModel, .keras, .h5, tf_model.h5 folder, and those of the registered runners (.onnx ...).

Both sides get identical inputs, generated from the reference's signature (token ids inside the vocabulary, padded attention masks, images N(0,1); 2 batch sizes x 2 sequence lengths where dimensions are dynamic; seed 0), or read from --inputs FILE.npz: keys are input names (input_ids, attention_mask) for one input set, or SET/NAME (0/input_ids, 1/input_ids ...) for several. Names, dtype kinds and ranks must match the reference's inputs.

The two models' inputs and outputs are paired by name; where the names differ but the counts match, by position (the report says so: "inputs paired by position: input -> x"); --map REF=CAND pairs them by hand.

An element fails only when it is outside both atol and rtol x |reference| (defaults per dtype as torch.testing: fp32 1e-5 / 1.3e-6). A constant reference fails unless --allow-degenerate. When a direct-route pair fails, the first diverging layer is named.

Latency (--latency): both models are timed in rounds after a warm-up, each round running a block of each in a random order, at the served shape (batch 1 at 128 tokens, inside the position table) and the largest verified shape. The figure per shape is the median of the per-round ratios candidate / reference, with its IQR and bootstrap 90% CI. --max-latency-ratio decides on the median only when that CI is tight (half-width <= 10% of the median); otherwise the latency status is "unstable": neither a pass nor a fail. Thread counts and the device are in the report.

Exit codes: 0 passed (an unstable latency without --max-latency-ratio is a warning), 1 verification or latency gate failed, 2 bad input or usage, 3 a porter bug, 4 equivalent, but the --max-latency-ratio gate was too noisy to decide (unstable)."""


@app.command(help=VERIFY_HELP)
def verify(
    reference: str = typer.Argument(..., metavar="REFERENCE", help="the model taken as right (a path)"),
    candidate: str = typer.Argument(..., metavar="CANDIDATE", help="the model checked against it (a path)"),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="an .npz of input arrays (keys: NAME or SET/NAME)"),
    expected: Optional[Path] = typer.Option(
        None, "--expected", help="recorded outputs (.npz by output name, recorded on --inputs): the reference, "
                                 "instead of running REFERENCE (as Polygraphy's --load-outputs)"),
    atol: List[str] = typer.Option([], "--atol", help="absolute tolerance: X for every output, or OUTPUT=X (repeatable)"),
    rtol: List[str] = typer.Option([], "--rtol", help="relative tolerance: X or OUTPUT=X (repeatable)"),
    allow_degenerate: bool = typer.Option(False, "--allow-degenerate", help="accept a constant reference output"),
    allow_nonfinite: bool = typer.Option(False, "--allow-nonfinite", help="run models whose weights hold NaN/Inf (refused by default; non-finite outputs still fail)"),
    latency: bool = typer.Option(False, "--latency", help="time both sides, interleaved, at several shapes: median paired ratio with its spread"),
    max_latency_ratio: Optional[float] = typer.Option(None, "--max-latency-ratio", help="fail when the median ratio candidate / reference is above R; exit 4 (unstable) when too noisy to decide (implies --latency)"),
    latency_budget: Optional[float] = typer.Option(None, "--latency-budget", help="seconds of timed rounds per shape, both sides (default 3)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads for both sides (default: all cores when timing)"),
    layout: List[str] = typer.Option([], "--layout", help="declared input layout, reference-to-candidate: nhwc-to-nchw or NAME=nchw-to-nhwc (repeatable; none: ignore the layout a converted folder declares)"),
    shape: List[str] = typer.Option([], "--shape", help="BATCHxSEQ for generated inputs, repeatable (default 1x5 3x5 1x41 3x41, the long one inside the position table)"),
    no_localise: bool = typer.Option(False, "--no-localise", help="skip the layer-by-layer search on failure"),
    name_map: List[str] = typer.Option([], "--map", help="REF=CAND: compare the reference's input or output REF with the candidate's CAND (repeatable; names that differ are otherwise paired by position where the counts match)"),
    trust_model_code: bool = typer.Option(False, "--trust-model-code", help="import a model.py that porter did not write (or that changed since); only for code you trust"),
    train: bool = typer.Option(False, "--train", help="training parity (Keras model vs the torch folder porter's keras layers writer made): one SGD step on the same batch, MSE, dropout 0, BatchNorm in training mode; compares loss, gradients per layer, running statistics and outputs after the step (taken in float64 on both sides; atol/rtol 1e-4)"),
    lr: float = typer.Option(0.1, "--lr", help="--train: the SGD learning rate"),
    reference_dtype: Literal["auto", "float32", "checkpoint"] = typer.Option(
        "auto", "--reference-dtype", help="the dtype a zoo model's HF torch REFERENCE is loaded in: checkpoint = its own "
                                          "bf16/fp16 (half a float32 reference's memory; 16-bit tolerances, shapes "
                                          "1x16 2x12 unless --shape or --inputs); auto = float32 unless porter's memory "
                                          "estimate says it does not fit and the checkpoint is one 16-bit dtype"),
    report: Optional[Path] = typer.Option(None, "--report", help="write the JSON report here"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="write JUnit XML here (one test case per output per shape)"),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="write a Markdown summary here (CI step summary)"),
    html: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML report here"),
):
    from porter.verifiers.api import verify as run
    from porter.verifiers.console import render
    from porter.verifiers.reports import write

    try:
        _check_report_paths(report=report, junit=junit, markdown=markdown, html=html)  # before the models load
        if train:
            from porter.verifiers.training import cli_train

            others = {"--inputs": inputs, "--expected": expected, "--atol": atol, "--rtol": rtol, "--latency": latency,
                      "--max-latency-ratio": max_latency_ratio, "--junit": junit, "--markdown": markdown, "--html": html,
                      "--layout": layout, "--shape": shape, "--map": name_map}
            raise typer.Exit(cli_train(reference, candidate, lr=lr, report=report, trust_model_code=trust_model_code,
                                       refused=[flag for flag, value in others.items() if value]))
        atol_all, atol_per = _tolerances(atol, "--atol")
        rtol_all, rtol_per = _tolerances(rtol, "--rtol")
        from porter.resources.reference_plan import verify_reference

        ref_dtype, ref_shapes, ref_note = verify_reference(reference, reference_dtype, candidate)
        result = run(
            reference, candidate, inputs=inputs, atol=atol_all, rtol=rtol_all, per_output_atol=atol_per,
            per_output_rtol=rtol_per, allow_degenerate=allow_degenerate, allow_nonfinite=allow_nonfinite, latency=latency,
            max_latency_ratio=max_latency_ratio, device=device, threads=threads, layout=layout,
            shapes=_shapes(shape) or ref_shapes, localise=not no_localise, latency_budget_s=latency_budget, name_map=name_map,
            trust_model_code=trust_model_code, expected=expected, reference_dtype=ref_dtype, fresh_process=True,
        )
        if ref_note:
            result.notes.insert(0, ref_note)
    except PorterError as exc:
        _fail(exc)
    render(result)
    try:
        for path in write(result, report=report, junit=junit, markdown=markdown, html=html):
            _echo(f"wrote {path}")
    except PorterError as exc:
        _fail(exc)
    raise typer.Exit(0 if result else LATENCY_UNSTABLE if result.status == "unstable" else 1)


def _check_report_paths(**paths) -> None:
    from porter.output.outdir import check_report_path

    for key, path in paths.items():
        check_report_path(path, f"--{key}")


def _check_help() -> str:
    from porter.verifiers.check import FORMAT  # the one description of the file (no framework import)

    block = "\n".join("    " + line for line in FORMAT.splitlines())
    return ("Run the verify jobs listed in a TOML file (default ./porter.toml); exit 1 if any fails.\n\n"
            f"The file:\n\n\b\n{block}\n\n"
            "Exit codes: 0 every job passed, 1 a job failed, 2 a bad file or a job with bad input, "
            "4 no job failed but a latency gate was too noisy to decide (unstable).")


CHECK_HELP = _check_help()


@app.command(help=CHECK_HELP)
def check(config: Path = typer.Argument(Path("porter.toml"), metavar="CONFIG", help="the TOML file of verify jobs")):
    from porter.verifiers.api import verify as run
    from porter.verifiers.check import load
    from porter.verifiers.console import render
    from porter.verifiers.reports import write

    try:
        jobs = load(config)
    except PorterError as exc:
        _fail(exc)
    outcomes = []
    for job in jobs:
        _echo(f"== {job.name}: {job.reference} -> {job.candidate}")
        try:
            _check_report_paths(**job.reports)  # before the models load
            result = run(job.reference, job.candidate, **{"fresh_process": True, **job.options})
            render(result)
            write(result, **job.reports)
        except PorterError as exc:
            typer.echo(f"error: {exc.render()}", err=True)
            outcomes.append((job.name, "error"))
            continue
        outcomes.append((job.name, result.status))
    for name, status in outcomes:
        _echo(f"{status:8s} {name}")
    statuses = {s for _, s in outcomes}
    raise typer.Exit(2 if "error" in statuses else 1 if "failed" in statuses else LATENCY_UNSTABLE if "unstable" in statuses else 0)


@zoo_app.command("list")
def zoo_list():
    """List the zoo's architectures."""
    from porter import zoo

    typer.echo(f"{'name':10s} {'route':7s} {'keras class':34s} torch class")
    for entry in zoo.ENTRIES.values():
        typer.echo(f"{entry.name:10s} {entry.route:7s} {entry.keras_class:34s} {entry.torch_class}")


@zoo_app.command("show")
def zoo_show(name: str):
    """Show one zoo entry: inputs, outputs, mapping file."""
    from porter import zoo

    try:
        entry = zoo.get(name)
    except PorterError as exc:
        _fail(exc)
    typer.echo(f"{entry.name}: {entry.description}")
    typer.echo(f"  torch:   {entry.torch_class}")
    typer.echo(f"  tf:      {entry.keras_class} ({entry.module})")
    typer.echo(f"  route:   {entry.route}")
    typer.echo(f"  mapping: mappings/{entry.family}.toml {entry.mapping_params}")
    typer.echo(f"  inputs:  {', '.join(entry.inputs)}")
    typer.echo(f"  outputs: {', '.join(entry.outputs)}")
    if entry.notes:
        typer.echo(f"  notes:   {entry.notes}")
    from porter.mapping import describe_rules

    typer.echo("  rules (torch -> tf; each op has its inverse for tf -> torch):")
    for line in describe_rules(entry.family):
        typer.echo(f"    {line}")


@app.command()
def inspect(path: Path = typer.Argument(..., metavar="PATH", help="a model file or folder")):
    """Name what PATH is, which zoo entry and mapping fit it, and its inputs and outputs (name, dtype, shape; None: dynamic)."""
    from porter import zoo
    from porter.readers.artifacts import detect

    try:
        artifact = detect(path)
        _echo(f"{path}: {artifact.description} [{artifact.framework}/{artifact.format}]")
        config = artifact.config
        if config is not None:
            entry = zoo.for_config(config, f"{path}/config.json")
            _echo(f"zoo entry: {entry.name}; mapping: mappings/{entry.family}.toml; route: direct")
        else:
            from porter.zoo.keras_hub.to_hf import describe_source

            _echo(describe_source(artifact) or "zoo entry: none; route: onnx")
        from porter.inspection import render, signature

        for line in render(*signature(artifact)):
            _echo(line)
    except PorterError as exc:
        _fail(exc)


def main(args: Optional[List[str]] = None) -> None:
    """The `porter` console entry: exit 0/1/2 as documented, 3 for a porter bug (traceback in a file)."""
    from porter.process import signals
    from porter.process.crash import run_cli

    signals.install()  # SIGTERM/SIGHUP stop a run as Ctrl-C does: the staged output is removed
    from porter.process import frameworks

    frameworks.freeze_after_import = True
    sys.exit(run_cli(app, args))


if __name__ == "__main__":  # pragma: no cover
    main()
