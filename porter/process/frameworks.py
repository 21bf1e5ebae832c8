"""Lazy, quiet imports of the heavy frameworks.

Keras must see KERAS_BACKEND before its first import, and TensorFlow's C++ log
noise is silenced unless the user asked for it; both are decided here, once.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile

from porter.errors import PorterError

# Set by the `porter` command (never for a library caller, whose process porter does not own).
freeze_after_import = False
_frozen_after: set[str] = set()


def _imported(framework: str) -> None:
    """After a framework's first import, in the `porter` process: move the ~1M objects the imports created into
    the collector's permanent generation (gc.freeze: O(1)). Every later collection (automatic ones while TensorFlow
    traces a graph, explicit ones between steps) walked them all: 1.6 s of bert-base's 16 s conversion. They are
    module-level objects that live as long as the process anyway. Once per framework, right after its import, so
    no model built later is frozen (a frozen reference cycle is never collected)."""
    if freeze_after_import and framework not in _frozen_after:
        _frozen_after.add(framework)
        gc.freeze()


def _quiet_tf_env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network at run time
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextlib.contextmanager
def _stderr_to_file():
    """TensorFlow's C++ start-up writes absl warnings straight to fd 2, whatever
    TF_CPP_MIN_LOG_LEVEL says; hold them back, and show them only if the import fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tensorflow():
    _quiet_tf_env()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    from porter.process import progress

    with progress.step("importing TensorFlow"), _stderr_to_file():
        import tensorflow as tf

        if not _has_gpu():
            # TF logs "failed call to cuInit" at its first device lookup on a machine without a GPU,
            # whatever TF_CPP_MIN_LOG_LEVEL is below 3: make that lookup here, where the line is held back
            tf.config.list_physical_devices("GPU")

    tf.get_logger().setLevel("ERROR")
    _imported("tensorflow")
    return tf


def _has_gpu() -> bool:
    """Cheap: an NVIDIA device node (or WSL's GPU node) exists. CUDA_VISIBLE_DEVICES is never touched."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def keras():
    _quiet_tf_env()
    tensorflow()
    import keras as _keras

    if _keras.backend.backend() != "tensorflow":
        raise PorterError(
            f"porter's Keras models need the TensorFlow backend, but KERAS_BACKEND={_keras.backend.backend()}",
            hint="unset KERAS_BACKEND or set it to 'tensorflow'",
        )
    return _keras


def torch():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if "torch" not in sys.modules:
        import torch  # noqa: F401

        _imported("torch")
    return sys.modules["torch"]


def transformers():
    _quiet_tf_env()
    import transformers as _transformers

    _transformers.logging.set_verbosity_error()
    _transformers.logging.disable_progress_bar()
    _imported("transformers")
    return _transformers


def set_threads(n: int | None) -> None:
    """Give torch and TensorFlow the same intra-op thread count (None: leave defaults)."""
    if not n:
        return
    torch().set_num_threads(n)
    tf = tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow's runtime is already initialised; it keeps its count


def save_keras(model, path) -> None:
    """``model.save(path)`` through Keras' own disk-backed path: by default Keras builds the whole
    weights file in memory first when RAM allows (a second copy of every weight)."""
    from unittest import mock

    keras()
    from keras.src.saving import saving_lib

    from porter.output.keras_h5_streaming import sliced_setitem

    store = saving_lib.H5IOStore
    with mock.patch.object(saving_lib, "is_memory_sufficient", lambda model: False), \
            mock.patch.object(store, "__setitem__", sliced_setitem(store.__setitem__)):  # no numpy copy per variable
        model.save(str(path))
