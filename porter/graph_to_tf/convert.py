"""torch.export ExportedProgram -> a tf.Module with one @tf.function whose signature keeps the
program's dynamic dims as None, its input names and its output names.

The SavedModel's signatures follow the direct route's (zoo/bert/entry.py): for a model with integer
inputs (token ids, masks), ``serving_default`` takes them as int32 and ``serving_int64`` as int64, each
cast to the dtype the ExportedProgram takes before the one traced graph; float inputs stay as torch
takes them in both. A model without integer inputs has ``serving_default`` only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from porter.graph_to_tf.check import check_supported
from porter.graph_to_tf.decompositions import decompose
from porter.graph_to_tf.layout import NCHW_TO_NHWC, NHWC_TO_NCHW
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
    channels_last: tuple = ()  # inputs the signatures take NHWC (torch's NCHW transposed back inside the graph)
    kv_tflite: dict | None = None  # a causal LM's prefill/decode model.tflite, as the report describes it
    _signatures: dict | None = field(repr=False, default=None)

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

    def signatures(self) -> dict:
        """name -> concrete function, as the SavedModel is written: serving_default (integer inputs int32)
        and serving_int64 (int64) where the program takes integer inputs, else serving_default alone."""
        if self._signatures is None:
            self._signatures = _signatures(self.module.serve, [s for s in self.inputs if s.is_tensor], self.channels_last)
        return self._signatures

    def report_signatures(self) -> dict:
        """For the report, once signatures() ran (the SavedModel has them): {"inputs": serving_default's inputs,
        "signatures": signature -> input name -> {"dtype", "shape" (None where dynamic)}}; else {}."""
        if self._signatures is None:
            return {}
        out = {}
        for key, fn in self._signatures.items():
            args, kwargs = fn.structured_input_signature  # positional before saving: the specs carry the names
            out[key] = {s.name: {"dtype": s.dtype.name, "shape": s.shape.as_list()}
                        for s in [*args, *kwargs.values()]}
        return {"inputs": out["serving_default"], "signatures": out}

    def saveable(self):
        """What tf.saved_model.save gets: the weights; the signatures carry the traced graph. Given the module with
        its tf.function attached, TF traced the whole graph a second time while listing what to save (1.3 s on
        bert-base)."""
        import tensorflow as tf

        root = tf.Module(name="porter_graph")
        root.weights = self.module.weights
        return root

    def save(self, directory, options=None) -> Path:
        import tensorflow as tf

        directory = Path(directory)
        tf.saved_model.save(self.saveable(), str(directory), signatures=self.signatures(), options=options)
        return directory


_INTEGER_IDS = ("int32", "int64")


def _signatures(serve, specs, channels_last=()) -> dict:
    """serving_default / serving_int64 over ``serve`` (the traced function, the program's own dtypes); the inputs
    named in ``channels_last`` are taken NHWC (as TF serving and TFLite expect images) and transposed to NCHW."""
    import tensorflow as tf

    native = [spec.tf_spec() for spec in specs]
    last = [s.name in channels_last and s.shape.rank == 4 for s in native]
    keys = (("serving_default", tf.int32), ("serving_int64", tf.int64))
    if not any(s.dtype.name in _INTEGER_IDS for s in native):
        keys = keys[:1]
    out = {}
    for key, ids in keys:
        wanted = [tf.TensorSpec([s.shape[i] for i in NCHW_TO_NHWC] if nhwc else s.shape,
                                ids if s.dtype.name in _INTEGER_IDS else s.dtype, name=s.name) for s, nhwc in zip(native, last)]
        if all(w.dtype == s.dtype for w, s in zip(wanted, native)) and not any(last):
            out[key] = serve.get_concrete_function()
            continue

        def cast_then_serve(*args):
            # casts and transposes, then calls the traced graph: the program is traced once, not once per signature
            args = [tf.transpose(a, NHWC_TO_NCHW) if nhwc else a for a, nhwc in zip(args, last)]
            return serve(*(a if a.dtype == s.dtype else tf.cast(a, s.dtype) for a, s in zip(args, native)))

        out[key] = tf.function(cast_then_serve, input_signature=wanted, autograph=False).get_concrete_function()
    return out


def convert_exported(ep, out_dir=None, *, decomposed: bool = False, input_names=None, output_names=None,
                     shared: dict | None = None) -> ConvertedGraph:
    """Convert ``ep`` (torch.export.export(...)) to TF; write the SavedModel to ``out_dir`` when given.

    ``input_names`` / ``output_names`` replace the names read from the program (for a wrapper module
    that takes ``*args`` or returns a tuple), one per tensor input / user output.

    ``shared``: tf.Variables by state-dict key of another program converted from the same model (a causal LM's
    serving_default and its KV-cache step): its parameters and buffers are used, not copied again.

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
    mapped = _file_mappings()
    reusable = _shareable(program, shared or {})
    for placeholder, (key, tensor, trainable) in weights(program).items():
        if key not in by_key and key in reusable and tuple(reusable[key].shape) == tuple(tensor.shape):
            by_key[key] = reusable[key]
        if key not in by_key:
            array = tensor.detach().cpu().contiguous().numpy()  # shares torch's memory
            by_key[key] = tf.Variable(_tf_value(tf, tensor, array, mapped), trainable=trainable, name=variable_name(key))
            _page_out(array, mapped)
            del array
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


def _shareable(program, shared: dict) -> dict:
    """The ``shared`` variables this program may use: parameters and buffers only (a lifted constant's key,
    ``lifted_tensor_0``, names a different value in each program)."""
    from torch.export.graph_signature import InputKind

    kinds = {spec.target: spec.kind for spec in program.graph_signature.input_specs if spec.target is not None}
    return {k: v for k, v in shared.items() if kinds.get(k) in (InputKind.PARAMETER, InputKind.BUFFER)}


def _tf_value(tf, tensor, array, mapped=()):
    """The Variable's initial value as one copy of the weight: a fresh (64-byte aligned) torch copy handed to
    TF through DLPack, which the Variable adopts without copying it again; tf.Variable(numpy) makes a
    transient second copy. The numpy array where DLPack cannot carry it (dtype, empty, 0-d). The copy is made
    in slices, each slice's source pages dropped once copied where they are pages of the mapped checkpoint:
    the largest weight (bert-base's word embeddings, 94 MB) is then never resident twice."""
    import torch

    t = tensor.detach()
    dtypes = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8)
    if t.device.type != "cpu" or t.numel() == 0 or t.dim() == 0 or t.dtype not in dtypes:
        return array
    copy = torch.empty_like(t, memory_format=torch.contiguous_format)
    if copy.data_ptr() % 64 or not copy.is_contiguous():  # TF's kernels need EIGEN_MAX_ALIGN_BYTES alignment
        return array
    rows = max(1, _COPY_SLICE_BYTES // max(1, t[0].numel() * t.element_size()))
    for start in range(0, t.shape[0], rows):
        copy[start:start + rows].copy_(t[start:start + rows])
        if array.flags.c_contiguous:
            _page_out(array[start:start + rows], mapped)
    try:
        return tf.experimental.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(copy))
    except Exception:  # noqa: BLE001 - an older TF's DLPack: the plain copy below is always right
        return array


_COPY_SLICE_BYTES = 8 << 20


# -- memory: weights transformers mapped from model.safetensors -------------------------------------

_MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now; clean file pages are dropped, never lost


def _file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's file-backed mappings (Linux; [] elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and parts[4] != "0" and parts[5].startswith("/"):
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
    except OSError:
        return []
    return ranges


def _page_out(array, mapped) -> None:
    """Once its tf.Variable holds a copy, let the kernel drop a weight's pages where they are pages of a
    mapped file (transformers maps model.safetensors): torch keeps the tensor, whose pages fault back in
    from the file if it is read again (localisation does), but the peak RSS holds one copy of the
    weights, not two. Anonymous memory is left alone (paging it out would mean swap)."""
    import ctypes
    import mmap

    start = array.ctypes.data
    end = start + array.nbytes
    if not mapped or array.nbytes < mmap.PAGESIZE or not any(lo <= start and end <= hi for lo, hi in mapped):
        return
    lo, hi = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE  # whole pages inside
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), ctypes.c_int(_MADV_PAGEOUT))  # EINVAL before 5.4: kept
    except (OSError, AttributeError):
        pass
