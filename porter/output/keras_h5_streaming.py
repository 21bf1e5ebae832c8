"""Write each variable into the .keras file's model.weights.h5 a slice at a time.

Keras' ``H5IOStore.__setitem__`` turns every variable into a numpy copy before h5py writes it, so
saving holds a second copy of the largest variable (a Llama embedding: 130 MB in bf16, 260 MB in
fp32) on top of the model. Here the dataset is created with the variable's shape and dtype and
filled from slices of at most ``CHUNK_BYTES``; the file is the same as Keras writes (same
datasets, same ``dtype="bfloat16"`` attribute), so ``keras.saving.load_model`` reads it as its own.
"""

from __future__ import annotations

CHUNK_BYTES = 16 * 2**20


def sliced_setitem(original):
    """A replacement for ``H5IOStore.__setitem__`` that streams variables (other values: ``original``)."""

    def setitem(store, key, value):
        tensor = getattr(value, "value", None)  # a Keras Variable's backend tensor
        shape = tuple(getattr(value, "shape", ()))
        if store.mode not in ("w", "a") or tensor is None or len(shape) == 0 or not hasattr(tensor, "numpy"):
            return original(store, key, value)
        from keras.src import backend

        from porter.checks.numerics import numpy_dtype

        if not store._h5_entry_initialized:
            store._create_h5_group(store._h5_entry_path)
        dtype = backend.standardize_dtype(value.dtype)
        dataset = store._h5_entry_group.create_dataset(key, shape=shape, dtype=numpy_dtype(dtype))
        row_bytes = max(1, dataset.dtype.itemsize * (int(dataset.size) // max(1, shape[0])))
        step = max(1, CHUNK_BYTES // row_bytes)
        for start in range(0, shape[0], step):
            dataset[start : start + step] = tensor[start : start + step].numpy()
        if dtype == "bfloat16":
            dataset.attrs["dtype"] = "bfloat16"

    return setitem
