"""`porter convert DIR --from tf --to torch` for a transformers 4.x TF checkpoint of any architecture:
map by the legacy rule family (routes/legacy_tf.py), write an HF PyTorch folder all-or-nothing,
and verify against the best reference there is, named in the report:
recorded outputs (--expected + --inputs), else none ("mapped, not compared", never "verified").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from porter.process import progress
from porter.errors import PorterError

NOT_COMPARED = "mapped, not compared"
NO_REFERENCE = "weights mapped and checked, no outputs compared (no reference: pass --expected/--inputs)"
HOW_TO_COMPARE = ("to know the mapping is right, compare against TF: run the tf_model.h5 with transformers 4.x "
                  "on inputs saved as inputs.npz (input_ids, attention_mask, ...), save its outputs by name "
                  "(last_hidden_state, logits, ...) as expected.npz, then `porter verify {src} {out} --expected "
                  "expected.npz --inputs inputs.npz` (or pass both to convert)")


def is_legacy_folder(path: Path) -> bool:
    from porter.readers.legacy_h5 import INDEX, WEIGHTS

    return path.is_dir() and (path / "config.json").is_file() and ((path / WEIGHTS).is_file() or (path / INDEX).is_file())


def takes_zoo_path(path: Path, config: dict) -> bool:
    """porter's Keras BERT/RoBERTa read a single-file base-model checkpoint themselves (and can run the TF side)."""
    from porter import zoo
    from porter.readers.legacy_h5 import WEIGHTS

    entry = zoo.ENTRIES.get(config.get("model_type"))
    archs = [str(a).removeprefix("TF") for a in config.get("architectures") or []]
    base = {"bert": "BertModel", "roberta": "RobertaModel"}.get(config.get("model_type"))
    return (entry is not None and getattr(entry, "family", None) == "bert" and (path / WEIGHTS).is_file()
            and (not archs or archs == [base]))


def convert_legacy(path, out, *, force=False, verify=True, atol=None, rtol=None, console=None,
                   inputs=None, expected=None, allow_nonfinite=False):
    from safetensors.numpy import save_file

    from porter.readers.artifacts import read_config_json
    from porter.output.result import REPORT, ConversionResult
    from porter.output.outdir import staged_output
    from porter.routes.legacy_tf import convert_checkpoint

    path, out = Path(path), Path(out)
    if expected is not None and inputs is None:
        raise PorterError(f"--expected {expected} needs the inputs it was recorded on", hint="pass --inputs FILE.npz")
    config = read_config_json(path / "config.json")
    t0 = time.perf_counter()
    with progress.step(f"mapping {path} by the transformers 4.x naming scheme"):
        conv = convert_checkpoint(path, config)
    _check_finite(conv.state, path, allow_nonfinite)
    t_map = time.perf_counter() - t0
    with staged_output(out, force) as tmp:
        with progress.step(f"writing model.safetensors of {out}"):
            save_file(conv.state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            conv.config.save_pretrained(tmp)
        verification = None
        if verify and expected is not None:
            from porter.verifiers.recorded import verify_recorded

            verification = verify_recorded(tmp, expected, inputs, atol=atol, rtol=rtol, route="direct",
                                           allow_nonfinite=allow_nonfinite)
        report = {
            "model": config.get("model_type"), "architecture": conv.architecture, "source": str(path),
            "from": "tf", "to": "torch", "route": "direct", "out": str(out),
            "mapping": {"family": " + ".join(conv.rule_files), "tensors": len(conv.plan.steps),
                        "ignored": conv.plan.ignored, "filled_with_start_values": conv.filled},
            "timings": {"load_and_map_s": t_map},
        }
        if verification is not None:
            from porter.output.result import name_final_path as _name_final_path
            from porter.verifiers.console import render

            _name_final_path(verification, tmp, out)
            report.update(status=verification.status, reference=f"recorded outputs: {expected}",
                          verification=verification.to_dict(), notes=list(conv.notes))
            render(verification, console)
        else:
            how = HOW_TO_COMPARE.format(src=path, out=out)
            report.update(status=NOT_COMPARED if verify else "not verified", reference=None,
                          notes=[NO_REFERENCE, how] + list(conv.notes) if verify else list(conv.notes))
            if verify:
                _say(console, NO_REFERENCE)
                _say(console, how)
        for note in conv.notes:  # what this architecture's rule file says a comparison must know
            _say(console, f"note ({conv.architecture}): {note}")
        from porter import __version__

        report["porter"] = __version__
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=str).replace(str(tmp), str(out)))
    return ConversionResult(out, "direct", verification, report)


def _say(console, text: str) -> None:
    if console is not None and hasattr(console, "print"):
        console.print(text)
    else:
        import sys

        print(text, file=sys.stdout)


def _check_finite(state: dict, path: Path, allow_nonfinite: bool) -> None:
    import numpy as np

    bad = [k for k, a in state.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
    if bad and not allow_nonfinite:
        raise PorterError(f"{path}: {len(bad)} tensor(s) hold NaN/Inf", problems=bad[:20],
                          hint="pass --allow-nonfinite to convert them anyway")
