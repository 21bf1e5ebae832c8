"""`porter inspect PATH`: a model's inputs and outputs (names, dtypes, shapes with None for
dynamic dims), as the runner that `porter verify` would use sees them.

Loading the model is the one heavy step (it imports the framework); it shows as progress.
Output dtypes and shapes come from what the format declares (an ONNX graph, a SavedModel
signature, a Keras model, an ExportedProgram's graph). A zoo model's HF folder declares none:
its outputs are read from two tiny runs (batch x sequence 1x3 and 2x5; a dim that changed is
None). Elsewhere they are "?".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tensor:
    name: str
    dtype: str | None = None
    shape: tuple | None = None

    def line(self, width: int) -> str:
        shape = "?" if self.shape is None else "(" + ", ".join("None" if d is None else str(d) for d in self.shape) + ("," if len(self.shape) == 1 else "") + ")"
        return f"  {self.name:<{width}}  {self.dtype or '?':<9} {shape}"


def signature(artifact) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of ``artifact``, read by loading it with its runner."""
    from porter.process import progress
    from porter.verifiers.runners import open_runner

    runner = open_runner(artifact)
    with progress.step(f"loading {artifact.path}"):
        runner.activate()
    try:
        specs = getattr(runner, "input_specs", {}) or {}
        inputs = [Tensor(n, *specs.get(n, (None, None))) for n in runner.input_names]
        declared = _output_specs(runner)
        outputs = [Tensor(n, *declared.get(n, (None, None))) for n in runner.output_names]
    finally:
        runner.deactivate()
    return inputs, outputs


def render(inputs: list[Tensor], outputs: list[Tensor]) -> list[str]:
    width = max([len(t.name) for t in inputs + outputs] + [4])
    lines = ["inputs:"] + ([t.line(width) for t in inputs] or ["  (none declared)"])
    lines += ["outputs:"] + [t.line(width) for t in outputs]
    return lines


def _output_specs(runner) -> dict:
    """name -> (dtype, shape) where the loaded format declares them; {} where it does not."""
    for read in (_onnx, _saved_model, _keras, _exported_program, _zoo_probe):
        try:
            found = read(runner)
        except Exception:  # a format detail this reader does not know: the outputs stay "?"
            found = None
        if found:
            return found
    return {}


def _onnx(runner):
    from porter.verifiers.runners.onnx_runtime import _DTYPES

    session = getattr(runner, "session", None)
    if session is None:
        return None
    return {o.name: (_DTYPES.get(o.type, o.type), tuple(d if isinstance(d, int) else None for d in o.shape))
            for o in session.get_outputs()}


def _saved_model(runner):
    fn = getattr(runner, "fn", None)
    if fn is None:
        return None
    return {n: (s.dtype.name, tuple(s.shape.as_list())) for n, s in fn.structured_outputs.items()}


def _keras(runner):
    model = getattr(runner, "model", None)
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != len(runner.output_names) or getattr(runner, "zoo_model", False):
        return None
    return {n: (str(getattr(t.dtype, "name", t.dtype)), tuple(t.shape)) for n, t in zip(runner.output_names, outputs)}


def _exported_program(runner):
    module = getattr(runner, "module", None)
    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    node = next(n for n in graph.nodes if n.op == "output")
    values = [a.meta.get("val") for a in _flat(node.args[0])]
    if len(values) != len(runner.output_names) or any(v is None for v in values):
        return None
    return {n: (str(v.dtype).removeprefix("torch."), tuple(int(d) if str(d).isdigit() else None for d in v.shape))
            for n, v in zip(runner.output_names, values)}


def _zoo_probe(runner):
    from porter.verifiers.inputs import generate, zoo_of

    info = zoo_of(runner)
    if info is None:
        return None
    small, larger = (runner.infer(f) for f in generate(runner, info, shapes=[(1, 3), (2, 5)]).feeds)
    return {n: (small[n].dtype.name, tuple(a if a == b else None for a, b in zip(small[n].shape, larger[n].shape)))
            for n in runner.output_names if n in small and n in larger and small[n].ndim == larger[n].ndim}


def _flat(args):
    if isinstance(args, (list, tuple)):
        return [x for a in args for x in _flat(a)]
    if isinstance(args, dict):
        return [x for a in args.values() for x in _flat(a)]
    return [args] if hasattr(args, "meta") else []
