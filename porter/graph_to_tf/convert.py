"""torch.export ExportedProgram -> a tf.Module with one @tf.function whose signature keeps the
program's dynamic dims as None, its input names and its output names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from porter.graph_to_tf.check import check_supported
from porter.graph_to_tf.decompositions import decompose
from porter.graph_to_tf.signature import output_names as read_output_names
from porter.graph_to_tf.signature import user_inputs, variable_name, weights


@dataclass
class ConvertedGraph:
    module: object  # tf.Module: .weights (tf.Variables by state-dict key) and .serve (the tf.function)
    program: object  # the decomposed ExportedProgram the TF graph was built from
    source: object  # the ExportedProgram as given
    inputs: list  # signature.InputSpec per user input (non-tensor ones were baked in by torch.export)
    output_names: list[str]
    runner: object = field(repr=False, default=None)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs if spec.is_tensor]

    @property
    def input_specs(self) -> list:
        return [spec.tf_spec() for spec in self.inputs if spec.is_tensor]

    @property
    def dynamic_dims(self) -> dict[str, dict[int, str]]:
        return {spec.name: dict(spec.dynamic) for spec in self.inputs if spec.is_tensor}

    @property
    def static_dims(self) -> dict[str, dict[int, int]]:
        return {spec.name: {i: d for i, d in enumerate(spec.shape) if d is not None} for spec in self.inputs
                if spec.is_tensor}

    def shape_report(self) -> list[str]:
        """One line per input: which dims stayed dynamic and which torch.export made static."""
        lines = []
        for spec in (s for s in self.inputs if s.is_tensor):
            dims = [f"{i}: {spec.dynamic[i]}" if d is None else f"{i}: {d} (static)" for i, d in enumerate(spec.shape)]
            lines.append(f"{spec.name} {list(spec.shape)}: " + ", ".join(dims))
        return lines

    def __call__(self, **feeds) -> dict:
        """Run the traced function on numpy inputs; numpy outputs by name."""
        import tensorflow as tf

        args = [tf.convert_to_tensor(feeds[name], spec.dtype) for name, spec in zip(self.input_names, self.input_specs)]
        return {k: v.numpy() for k, v in self.module.serve(*args).items()}

    def save(self, directory) -> Path:
        import tensorflow as tf

        directory = Path(directory)
        tf.saved_model.save(self.module, str(directory),
                            signatures={"serving_default": self.module.serve.get_concrete_function()})
        return directory


def convert_exported(ep, out_dir=None, *, decomposed: bool = False, input_names=None, output_names=None
                     ) -> ConvertedGraph:
    """Convert ``ep`` (torch.export.export(...)) to TF; write the SavedModel to ``out_dir`` when given.

    ``input_names`` / ``output_names`` replace the names read from the program (for a wrapper module
    that takes ``*args`` or returns a tuple), one per tensor input / user output.

    Raises UnsupportedModelError listing every op porter has no converter for, before building anything.
    """
    import tensorflow as tf

    from porter.graph_to_tf.runner import GraphRunner

    program = ep if decomposed else decompose(ep)
    check_supported(program.graph)
    inputs = user_inputs(program)
    names = list(output_names) if output_names is not None else read_output_names(program)
    if input_names is not None:
        for spec, name in zip([s for s in inputs if s.is_tensor], input_names, strict=True):
            spec.name = name

    module = tf.Module(name="porter_graph")
    variables, by_key = {}, {}
    for placeholder, (key, tensor, trainable) in weights(program).items():
        if key not in by_key:
            # .numpy() shares torch's memory; the Variable's buffer is the only copy TF makes
            array = tensor.detach().cpu().contiguous().numpy()
            by_key[key] = tf.Variable(array, trainable=trainable, name=variable_name(key))
        variables[placeholder] = by_key[key]
    module.weights = by_key
    runner = GraphRunner(program, variables, inputs)

    def serve(*args):
        outs = runner.run(*args)
        return {name: tf.identity(value, name=name) for name, value in zip(names, outs)}

    # autograph off: the walk over the fx graph is plain Python that runs once, at trace time
    module.serve = tf.function(serve, input_signature=[spec.tf_spec() for spec in inputs if spec.is_tensor],
                               autograph=False)
    converted = ConvertedGraph(module, program, ep, inputs, names, runner)
    module.serve.get_concrete_function()  # trace now: a conversion error surfaces here, not at first call
    if out_dir is not None:
        converted.save(out_dir)
    return converted
