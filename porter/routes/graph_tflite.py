"""`--to tflite` on the graph route: the SavedModel porter's ATen -> TF converter writes (staged, then removed)
-> tf.lite.TFLiteConverter with TFLite's built-in ops only (Select-TF "Flex" ops only with --allow-flex).

The signature's None dims stay -1 in the .tflite's shape_signature (resize_tensor_input works on them); its input
dtypes are the SavedModel's. A model that needs a TF op LiteRT has no builtin for stops here (exit 2) naming the
op and --allow-flex. The written file is described from its own flatbuffer (ops, Flex ops, inputs), without
TensorFlow, and verified by LiteRT alone in a fresh process (porter/verifiers/runners/litert_isolated.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from porter.errors import PorterError

FLEX_HINT = ("pass --allow-flex to keep them as Select-TF (Flex) ops: the .tflite then runs only where the Flex "
             "delegate is linked (TensorFlow's interpreter, or LiteRT built with tensorflow-lite-select-tf-ops)")


def write_tflite(prep, folder: Path, allow_flex: bool, quantize=None):
    """``folder``/model.tflite from ``prep`` (graph_tf.Prepared); returns (converted, report section).
    ``quantize`` (tflite_quantize.Quantize): also its quantized model from the same SavedModel, described under
    the section's "quantized"."""
    from porter.routes.graph_tf import _write

    work = folder / ".saved_model"
    quantized = None
    try:
        converted = _write(prep, work)
        (folder / "model.tflite").write_bytes(_convert(work, allow_flex, prep.program))
        if quantize is not None:
            from porter.routes import tflite_quantize

            dtypes = {n: d["dtype"] for n, d in describe(folder / "model.tflite")["inputs"].items()}
            data, quantized = tflite_quantize.convert(work, quantize, allow_flex, dtypes)
            (folder / quantize.file).write_bytes(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    described = describe(folder / "model.tflite")
    if quantized is not None:
        q = describe(folder / quantize.file)
        quantized = dict(quantized, file=quantize.file, ops=q["ops"], flex_ops=q["flex_ops"], custom_ops=q["custom_ops"])
    return converted, dict(described, allow_flex=allow_flex, **({"quantized": quantized} if quantized else {}))


def _convert(saved_model: Path, allow_flex: bool, program) -> bytes:
    from porter.process.frameworks import tensorflow
    from porter.routes.to_onnx import captured_output

    tf = tensorflow()
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + ([tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
    try:
        with captured_output("converting the SavedModel to TFLite (built-in ops"
                             + (" + Select-TF ops)" if allow_flex else " only)")):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
            converter.target_spec.supported_ops = ops
            return converter.convert()
    except PorterError as exc:
        cause = exc.__cause__ or exc.__context__
        needs = _needed_ops(cause) if cause is not None else None
        if needs is None:
            raise
        raise _refusal(*needs, allow_flex, program) from None
    except Exception as exc:  # noqa: BLE001 - the converter's own error, where captured_output let it through
        needs = _needed_ops(exc)
        if needs is None:
            raise PorterError(f"the TFLite converter failed: {str(exc).strip().splitlines()[-1][:400]}") from None
        raise _refusal(*needs, allow_flex, program) from None


def _needed_ops(exc) -> tuple[list[str], list[str]] | None:
    """(TF ops that need Flex, TF ops with neither a builtin nor a Flex kernel) from a ConverterError, or None."""
    flex, custom = [], []
    for error in getattr(exc, "errors", None) or ():
        name = error.operator.name.removeprefix("tf.")
        code = type(error).ErrorCode.Name(error.error_code) if hasattr(type(error), "ErrorCode") else str(error.error_code)
        if name and ("FLEX" in code or error.error_code == 1):
            flex.append(name)
        elif name and ("CUSTOM" in code or error.error_code == 2):
            custom.append(name)
    text = str(exc)
    for label, found in (("Flex ops", flex), ("Custom ops", custom)):
        for match in re.finditer(rf"{label}: ([^\n]+)", text):
            found.extend(n.strip().removeprefix("Flex") for n in match.group(1).split(",") if n.strip())
    if not flex and not custom:
        return None
    return sorted(set(flex)), sorted(set(custom) - set(flex))


def _aten_sources(tf_ops, program) -> dict[str, list[str]]:
    """TF op -> the ATen ops in the graph of the same name (Cosh <- aten.cosh, BitwiseAnd <- aten.bitwise_and)."""
    found: dict[str, set] = {}
    for node in getattr(getattr(program, "graph", None), "nodes", ()):
        if node.op != "call_function":
            continue
        name = str(node.target).split(".")[1] if str(node.target).startswith("aten.") else None
        if name is None:
            continue
        for op in tf_ops:
            if name.replace("_", "") == op.lower():
                found.setdefault(op, set()).add(f"aten.{name}")
    return {k: sorted(v) for k, v in found.items()}


def _refusal(flex, custom, allow_flex, program) -> PorterError:
    sources = _aten_sources([*flex, *custom], program)

    def line(op, flexible):
        origin = f" (from {', '.join(sources[op])})" if op in sources else ""
        return f"tf.{op}{origin}: " + (f"no TFLite builtin; a Select-TF op (Flex{op})" if flexible
                                       else "neither a TFLite builtin nor a Select-TF (Flex) op")

    problems = [line(op, True) for op in flex] + [line(op, False) for op in custom]
    if custom:
        return PorterError(f"the model needs TF ops that LiteRT cannot run: {', '.join(custom)}"
                           + (f" (and Flex ops: {', '.join(flex)})" if flex else ""), problems=problems,
                           hint="no flag makes these run in TFLite: convert --to tf, or replace the op in the model"
                           + (f"; {', '.join(flex)} would pass with --allow-flex" if flex and not allow_flex else ""))
    return PorterError(f"the model needs TF ops that TFLite has no built-in op for: {', '.join(flex)} "
                       f"(Flex ops {', '.join('Flex' + op for op in flex)}); LiteRT alone cannot run them",
                       problems=problems, hint=FLEX_HINT)


def describe(path: Path) -> dict:
    """The .tflite's ops (name -> count), its Flex ops and its signature inputs, read from the flatbuffer
    (ai_edge_litert's schema; TensorFlow's where LiteRT is missing)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(oc.CustomCode().decode() if code == schema.BuiltinOperator.CUSTOM and oc.CustomCode() else builtin.get(code, str(code)))
    ops: dict[str, int] = {}
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            name = codes[graph.Operators(o).OpcodeIndex()]
            ops[name] = ops.get(name, 0) + 1
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
    inputs, signature = {}, None
    for i in range(model.SignatureDefsLength()):
        sd = model.SignatureDefs(i)
        key = sd.SignatureKey().decode()
        if signature is not None and key != "serving_default":
            continue
        signature, graph, inputs = key, model.Subgraphs(sd.SubgraphIndex()), {}
        for j in range(sd.InputsLength()):
            t = sd.Inputs(j)
            tensor = graph.Tensors(t.TensorIndex())
            shape = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else tensor.ShapeAsNumpy()
            inputs[t.Name().decode()] = {"dtype": types.get(tensor.Type(), str(tensor.Type())),
                                         "shape_signature": [int(d) for d in (shape if tensor.ShapeLength() or tensor.ShapeSignatureLength() else [])]}
    flex = sorted(n for n in ops if n.startswith("Flex"))
    custom = sorted(n for n in ops if n not in flex and n not in builtin.values())
    return {"file": "model.tflite", "signature": signature, "ops": dict(sorted(ops.items())), "flex": bool(flex),
            "flex_ops": flex, "custom_ops": custom, "inputs": inputs}


def check_against_saved_model(described: dict, written: dict) -> list[dict]:
    """The .tflite's inputs against the SavedModel's (name -> (dtype, shape with None)): a dtype that differs
    raises; dims the SavedModel kept dynamic that the .tflite fixed come back (as graph_tf's static_dims)."""
    fixed = []
    for name, (dtype, shape) in written.items():
        got = described["inputs"].get(name)
        if got is None:
            raise PorterError(f"the .tflite has no input {name!r}", problems=[f"its inputs: {sorted(described['inputs'])}"])
        if got["dtype"] != str(dtype):
            raise PorterError(f"the .tflite's input {name} is {got['dtype']}, the SavedModel's {dtype}")
        for axis, (before, after) in enumerate(zip(shape, got["shape_signature"])):
            if before is None and after != -1:
                fixed.append({"input": name, "axis": axis, "size": int(after), "where": "the TFLite converter fixed it"})
    return fixed
