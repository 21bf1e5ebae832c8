"""Read TensorFlow-side weights by their TFBertModel-style names, and load Keras artifacts safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from porter.readers.artifacts import read_config_json
from porter.errors import MappingError, PorterError


def legacy_h5_weights(path: Path) -> dict[str, np.ndarray]:
    """Weights of a tf_keras ``save_weights`` .h5 (what transformers 4.x wrote as tf_model.h5),
    keyed without the model's own name: 'tf_bert_model/bert/...:0' -> 'bert/...'."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PorterError(f"{path} is not a readable HDF5 file ({exc})") from None
    out = {}
    with f:
        layer_names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs.get("layer_names", [])]
        if not layer_names:
            raise PorterError(f"{path} has no 'layer_names': not a Keras weights file")
        for layer in layer_names:
            group = f[layer]
            for wname in group.attrs.get("weight_names", []):
                wname = wname.decode() if isinstance(wname, bytes) else wname
                key = wname.split("/", 1)[1] if "/" in wname else wname
                out[key.removesuffix(":0")] = np.asarray(group[wname])
    return out


def scan_keras_weights(model, origin, allow_nonfinite: bool) -> dict:
    """Refuse (unless allowed) a Keras model whose weights hold NaN/Inf, naming each variable and the file."""
    from porter.checks.numerics import scan_arrays

    return scan_arrays(((v.path, v.numpy()) for v in model.weights), str(origin), allow_nonfinite)


def keras_weights_dtype(model) -> str:
    """The float dtype most of a Keras model's weight elements are stored in."""
    from porter.checks.numerics import checkpoint_float_dtype, dtype_name

    dtypes = {v.path: dtype_name(v.dtype) for v in model.weights}
    return checkpoint_float_dtype(dtypes, {v.path: tuple(v.shape) for v in model.weights})


def assign_by_name(variables: dict, arrays: dict, origin: str) -> None:
    """Load arrays into variables of the same name; every problem reported together."""
    problems = [f"missing tensor {k!r} {tuple(v.shape)}" for k, v in variables.items() if k not in arrays]
    problems += [f"unexpected tensor {k!r} {tuple(a.shape)}" for k, a in arrays.items() if k not in variables]
    problems += [
        f"shape mismatch: {k!r} is {tuple(a.shape)} in the file, {tuple(variables[k].shape)} in the model"
        for k, a in arrays.items()
        if k in variables and tuple(a.shape) != tuple(variables[k].shape)
    ]
    if problems:
        raise MappingError(f"{origin} does not fit the model built from its config.json", problems=problems)
    for k, v in variables.items():
        v.assign(arrays[k])


def load_keras_artifact(artifact, as_zoo_model: bool = True):
    """(keras model, HF config dict or None). Zoo models come back as porter's Keras classes."""
    from porter.process.frameworks import keras

    fmt, path = artifact.format, Path(artifact.path)
    if fmt == "hf_tf_h5":
        from porter import zoo

        config = read_config_json(path / "config.json")
        entry = zoo.for_config(config, f"{path}/config.json")
        config = entry.impl.full_config(config)
        model = entry.impl.build_keras(config, zero_init=True)
        arrays = legacy_h5_weights(path / "tf_model.h5")
        # assigning would silently cast an integer-typed kernel to float: refuse it here, where the dtype is seen
        from porter.checks.numerics import check_integer_weights, dtype_name

        check_integer_weights({k: dtype_name(a.dtype) for k, a in arrays.items()}, str(path / "tf_model.h5"))
        assign_by_name(entry.impl.keras_variables(model), arrays, str(path / "tf_model.h5"))
        return model, config
    if fmt == "keras_hub_preset":
        from porter.zoo.keras_hub.to_hf import load_preset, user_model

        return user_model(load_preset(path), path)
    if fmt == "saved_model":
        from porter.readers.keras2_saved_model import is_keras2_saved_model, load_model

        if is_keras2_saved_model(path):  # tf_keras' model.save(dir): its layers from keras_metadata.pb
            return load_model(path), None
        if not (path / "model.keras").is_file():
            raise PorterError(
                f"{path} is a SavedModel without porter's model.keras beside it: its weights have no names to map",
                hint="convert it through ONNX: pass --route onnx",
            )
        path = path / "model.keras"
    from porter.checks.keras_archive import check_keras_archive, check_keras_h5

    # before Keras builds (allocates) or unpacks anything: a hostile file is refused by what it declares
    (check_keras_h5 if fmt == "h5" else check_keras_archive)(path)
    import porter.zoo.bert.keras_model  # noqa: F401  registers porter's classes for safe deserialisation
    from porter.zoo.keras_hub.saved import hf_config_beside, register_if_keras_hub

    register_if_keras_hub(path)  # keras-hub's classes, for a keras-hub family's model.keras

    from porter.zoo.keras_hub.to_hf import keras_hub_class_of_file, load_keras_file

    try:
        if keras_hub_class_of_file(path):  # a user's keras-hub model (a tied Llama included)
            model = load_keras_file(path)
        elif fmt == "h5" and _translated_h5(path):  # tf_keras' model.save('m.h5') or Keras 3 op layers: translated
            model = _load_keras2_h5(path)
        else:
            model = keras().saving.load_model(str(path), safe_mode=True, compile=False)
    except PorterError:
        raise
    except Exception as exc:
        raise PorterError(f"{path} could not be loaded by Keras (safe_mode=True): {exc}") from None
    # porter's plain Functional model.keras is rebuilt as the zoo model the rules map; as_zoo_model=False keeps it a
    # Functional model (the ONNX route exports its input signature)
    model, config = _from_plain_functional(model, path) if as_zoo_model else (model, None)
    config = config or getattr(model, "hf_config", None) or hf_config_beside(model, path)
    if config is None:  # a user's keras-hub model: its transformers config is derived (an unknown family is refused)
        from porter.zoo.keras_hub.to_hf import is_keras_hub, user_model

        if is_keras_hub(model):
            model, config = user_model(model, path)
    return model, ({k: v for k, v in config.items() if not k.startswith("_porter")} if config else None)


def _from_plain_functional(model, path) -> tuple:
    """(model, config): a plain Functional model.keras porter wrote (keras' and keras-hub's layers, the transformers
    config inside: zoo/keras_file.py) rebuilt as the zoo entry's own Keras model, which the rules map; anything else
    as it came, config None."""
    from porter import zoo
    from porter.zoo import keras_file
    from porter.zoo.bert import portable

    if type(model).__name__ != "Functional":
        return model, None
    config = keras_file.read_config(path)
    if config is None and portable.is_portable(model):  # porter's BERT/RoBERTa, moved from its config.json or not
        beside = keras_file.config_beside(path)
        config = beside if beside and beside["model_type"] in ("bert", "roberta") else None
        if config is None:
            raise PorterError(f"{path} looks like porter's BERT/RoBERTa model.keras but carries no transformers config "
                              f"({keras_file.CONFIG_MEMBER} inside it, or config.json beside it)",
                              hint="put the config.json porter wrote beside it, or convert it with --route onnx")
    if config is None or config.get("model_type") not in zoo.ENTRIES:
        return model, None
    entry = zoo.for_config(config, str(path))
    rebuilt = entry.impl.from_keras_file(model, config, str(path)) if hasattr(entry.impl, "from_keras_file") else None
    if rebuilt is None:
        raise PorterError(f"{path} carries a {config['model_type']} config ({keras_file.CONFIG_MEMBER}) but not the "
                          "model porter writes for it", hint="convert it with --route onnx")
    return rebuilt, config


def _translated_h5(path) -> bool:
    """Whether Keras 3's own .h5 loader needs the config translated (porter/readers/keras2_config.py): Keras 2 wrote
    it, or Keras 3 wrote op layers in it (a mask_zero mask's NotEqual), which its .h5 loader does not know."""
    import h5py

    from porter.readers.keras2_config import h5_config_text

    if _written_by_keras2(path):
        return True
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            return False
        text = f.attrs["model_config"]
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return h5_config_text(text, f.attrs.get("keras_version")) != text


def _written_by_keras2(path) -> bool:
    import h5py

    from porter.readers.keras2_config import written_by_keras2

    with h5py.File(path, "r") as f:
        return "model_config" in f.attrs and written_by_keras2(f.attrs.get("keras_version"))


def _load_keras2_h5(path):
    """A tf_keras (Keras 2) .h5, or a Keras 3 one holding op layers (_translated_h5), loaded as Keras 3's own legacy
    loader does (legacy_h5_format.load_model_from_hdf5, compile=False, safe_mode), its model_config translated for
    Keras 3 first (porter/readers/keras2_config.py); the weights are read by Keras, layer by layer, from
    model_weights. check_keras_h5 has checked the file."""
    import h5py

    from porter.process.frameworks import keras
    from porter.readers.keras2_config import h5_config_text

    keras()
    from keras.src.backend.common import global_state
    from keras.src.legacy.saving import json_utils, legacy_h5_format, saving_options, saving_utils
    from keras.src.saving import object_registration, serialization_lib

    custom = {**object_registration.GLOBAL_CUSTOM_OBJECTS,
              **global_state.get_global_attribute("custom_objects_scope_dict", {})}
    with h5py.File(path, "r") as f:
        text = f.attrs["model_config"]
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        config = json_utils.decode(h5_config_text(text, f.attrs.get("keras_version")))
        with saving_options.keras_option_scope(use_legacy_config=True), serialization_lib.SafeModeScope(True):
            model = saving_utils.model_from_config(config, custom_objects=custom)
            legacy_h5_format.load_weights_from_hdf5_group(legacy_h5_format.safe_get_h5_group(f, "model_weights"), model)
    return model
