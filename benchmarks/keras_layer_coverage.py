"""How many of keras.layers' tensor layers the keras layers writer translates.

Lists every class in keras.layers, sets aside those that compute nothing on tensors by themselves (base
classes, cells, wrappers of Python functions, preprocessing of strings/images with state from adapt(),
random augmentation), builds a tiny model around each of the rest and plans it with porter's writer
(porter.keras_to_torch.codegen.plan_model: the same check `porter convert` makes before taking the keras
layers route). Prints handled / total and, for each layer left, why.

    python benchmarks/keras_layer_coverage.py [--json out.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# not layers that compute on tensors on their own: bases, RNN cells (used inside RNN), Python-function
# wrappers, input plumbing, and preprocessing whose state comes from adapt() or that is random by design
NOT_TENSOR = {
    "Layer", "InputLayer", "InputSpec", "Wrapper", "RNN", "StackedRNNCells", "AbstractRNNCell",
    "SimpleRNNCell", "LSTMCell", "GRUCell", "ConvLSTMCell", "Lambda", "TFSMLayer", "JaxLayer", "FlaxLayer",
    "TorchModuleWrapper", "Pipeline", "StringLookup", "IntegerLookup", "TextVectorization", "Hashing",
    "HashedCrossing", "CategoryEncoding", "Discretization", "Input",
}
RANDOM_PREFIXES = ("Random", "Gaussian", "Alpha", "Spatial", "Aug", "Rand", "Cut", "Mix", "Solarization",
                   "Equalization", "AutoContrast", "MaxNumBoundingBoxes")


def _keras():
    import keras

    return keras


def classes():
    k = _keras()
    return sorted(n for n, c in vars(k.layers).items() if inspect.isclass(c) and issubclass(c, k.layers.Layer)
                  or n in ("InputSpec",))


def _seq(k, name, layer, shape):
    x = k.Input(shape, name="x")
    return k.Model(x, layer(x), name=name)


def tiny_model(name: str):
    """A model around ``name``, or None where no tiny model is written here (counted as left: 'no probe')."""
    k = _keras()
    L = k.layers
    img, seq, vol = (8, 8, 3), (6, 4), (4, 4, 4, 2)
    two = lambda layer, shape: (lambda a, b: k.Model([a, b], layer([a, b]), name=name))(  # noqa: E731
        k.Input(shape, name="a"), k.Input(shape, name="b"))
    simple = {
        "Activation": lambda: (L.Activation("relu"), seq), "ReLU": lambda: (L.ReLU(), seq), "LeakyReLU": lambda: (L.LeakyReLU(), seq),
        "PReLU": lambda: (L.PReLU(), seq), "ELU": lambda: (L.ELU(), seq), "Softmax": lambda: (L.Softmax(), seq),
        "Dense": lambda: (L.Dense(3), seq), "EinsumDense": lambda: (L.EinsumDense("abc,cd->abd", (None, 3)), seq),
        "Dropout": lambda: (L.Dropout(0.5), seq), "SpatialDropout1D": lambda: (L.SpatialDropout1D(0.5), seq),
        "SpatialDropout2D": lambda: (L.SpatialDropout2D(0.5), img), "SpatialDropout3D": lambda: (L.SpatialDropout3D(0.5), vol),
        "GaussianDropout": lambda: (L.GaussianDropout(0.5), seq), "GaussianNoise": lambda: (L.GaussianNoise(0.5), seq),
        "AlphaDropout": lambda: (L.AlphaDropout(0.5), seq), "ActivityRegularization": lambda: (L.ActivityRegularization(), seq),
        "Identity": lambda: (L.Identity(), seq), "Flatten": lambda: (L.Flatten(), img), "Reshape": lambda: (L.Reshape((8, 24)), img),
        "Permute": lambda: (L.Permute((2, 1)), seq), "RepeatVector": lambda: (L.RepeatVector(3), (4,)),
        "Conv1D": lambda: (L.Conv1D(3, 3), seq), "Conv2D": lambda: (L.Conv2D(3, 3), img), "Conv3D": lambda: (L.Conv3D(3, 3), vol),
        "Conv1DTranspose": lambda: (L.Conv1DTranspose(3, 3), seq), "Conv2DTranspose": lambda: (L.Conv2DTranspose(3, 3), img),
        "Conv3DTranspose": lambda: (L.Conv3DTranspose(3, 3), vol), "DepthwiseConv1D": lambda: (L.DepthwiseConv1D(3), seq),
        "DepthwiseConv2D": lambda: (L.DepthwiseConv2D(3), img), "SeparableConv1D": lambda: (L.SeparableConv1D(3, 3), seq),
        "SeparableConv2D": lambda: (L.SeparableConv2D(3, 3), img),
        "Convolution1D": lambda: (L.Conv1D(3, 3), seq), "Convolution2D": lambda: (L.Conv2D(3, 3), img), "Convolution3D": lambda: (L.Conv3D(3, 3), vol),
        "Convolution1DTranspose": lambda: (L.Conv1DTranspose(3, 3), seq), "Convolution2DTranspose": lambda: (L.Conv2DTranspose(3, 3), img),
        "Convolution3DTranspose": lambda: (L.Conv3DTranspose(3, 3), vol), "SeparableConvolution1D": lambda: (L.SeparableConv1D(3, 3), seq),
        "SeparableConvolution2D": lambda: (L.SeparableConv2D(3, 3), img),
        "BatchNormalization": lambda: (L.BatchNormalization(), img), "LayerNormalization": lambda: (L.LayerNormalization(), seq),
        "GroupNormalization": lambda: (L.GroupNormalization(2), (6, 4)), "UnitNormalization": lambda: (L.UnitNormalization(), seq),
        "RMSNormalization": lambda: (L.RMSNormalization(), seq),
        "SpectralNormalization": lambda: (L.SpectralNormalization(L.Dense(3)), seq),
        "Rescaling": lambda: (L.Rescaling(1 / 255), img), "Normalization": lambda: (L.Normalization(mean=0.5, variance=2.0), seq),
        "MaxPooling1D": lambda: (L.MaxPooling1D(2), seq), "MaxPooling2D": lambda: (L.MaxPooling2D(2), img), "MaxPooling3D": lambda: (L.MaxPooling3D(2), vol),
        "AveragePooling1D": lambda: (L.AveragePooling1D(2), seq), "AveragePooling2D": lambda: (L.AveragePooling2D(2), img),
        "AveragePooling3D": lambda: (L.AveragePooling3D(2), vol), "MaxPool1D": lambda: (L.MaxPool1D(2), seq), "MaxPool2D": lambda: (L.MaxPool2D(2), img),
        "MaxPool3D": lambda: (L.MaxPool3D(2), vol), "AvgPool1D": lambda: (L.AvgPool1D(2), seq), "AvgPool2D": lambda: (L.AvgPool2D(2), img),
        "AvgPool3D": lambda: (L.AvgPool3D(2), vol),
        "GlobalAveragePooling1D": lambda: (L.GlobalAveragePooling1D(), seq), "GlobalAveragePooling2D": lambda: (L.GlobalAveragePooling2D(), img),
        "GlobalAveragePooling3D": lambda: (L.GlobalAveragePooling3D(), vol), "GlobalMaxPooling1D": lambda: (L.GlobalMaxPooling1D(), seq),
        "GlobalMaxPooling2D": lambda: (L.GlobalMaxPooling2D(), img), "GlobalMaxPooling3D": lambda: (L.GlobalMaxPooling3D(), vol),
        "GlobalAvgPool1D": lambda: (L.GlobalAvgPool1D(), seq), "GlobalAvgPool2D": lambda: (L.GlobalAvgPool2D(), img),
        "GlobalAvgPool3D": lambda: (L.GlobalAvgPool3D(), vol), "GlobalMaxPool1D": lambda: (L.GlobalMaxPool1D(), seq),
        "GlobalMaxPool2D": lambda: (L.GlobalMaxPool2D(), img), "GlobalMaxPool3D": lambda: (L.GlobalMaxPool3D(), vol),
        "ZeroPadding1D": lambda: (L.ZeroPadding1D(1), seq), "ZeroPadding2D": lambda: (L.ZeroPadding2D(1), img),
        "ZeroPadding3D": lambda: (L.ZeroPadding3D(1), vol), "Cropping1D": lambda: (L.Cropping1D(1), seq),
        "Cropping2D": lambda: (L.Cropping2D(1), img), "Cropping3D": lambda: (L.Cropping3D(1), (5, 5, 5, 2)),
        "UpSampling1D": lambda: (L.UpSampling1D(2), seq), "UpSampling2D": lambda: (L.UpSampling2D(2), img),
        "UpSampling3D": lambda: (L.UpSampling3D(2), vol),
        "SimpleRNN": lambda: (L.SimpleRNN(3), seq), "LSTM": lambda: (L.LSTM(3), seq), "GRU": lambda: (L.GRU(3), seq),
        "Bidirectional": lambda: (L.Bidirectional(L.LSTM(3)), seq), "TimeDistributed": lambda: (L.TimeDistributed(L.Dense(3)), seq),
        "ConvLSTM1D": lambda: (L.ConvLSTM1D(2, 3), (3, 6, 2)), "ConvLSTM2D": lambda: (L.ConvLSTM2D(2, 3), (3, 6, 6, 2)),
        "ConvLSTM3D": lambda: (L.ConvLSTM3D(2, 3), (3, 4, 4, 4, 2)),
        "Masking": lambda: (L.Masking(), seq), "Embedding": None,
        "MultiHeadAttention": None, "GroupQueryAttention": None, "Attention": None, "AdditiveAttention": None,
        "Resizing": lambda: (L.Resizing(4, 4), img), "CenterCrop": lambda: (L.CenterCrop(4, 4), img),
        "AdaptiveAveragePooling1D": lambda: (L.AdaptiveAveragePooling1D(4), seq),
        "AdaptiveAveragePooling2D": lambda: (L.AdaptiveAveragePooling2D((3, 5)), img),
        "AdaptiveAveragePooling3D": lambda: (L.AdaptiveAveragePooling3D(3), vol),
        "AdaptiveMaxPooling1D": lambda: (L.AdaptiveMaxPooling1D(4), seq),
        "AdaptiveMaxPooling2D": lambda: (L.AdaptiveMaxPooling2D((3, 5)), img),
        "AdaptiveMaxPooling3D": lambda: (L.AdaptiveMaxPooling3D(3), vol),
    }
    if name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot"):
        layer = getattr(L, name)(axes=1) if name == "Dot" else getattr(L, name)()
        return two(layer, (4,) if name == "Dot" else seq)
    if name == "Embedding":
        ids = k.Input((5,), dtype="int32", name="ids")
        return k.Model(ids, L.Embedding(10, 3)(ids), name=name)
    if name in ("MultiHeadAttention", "GroupQueryAttention"):
        x = k.Input(seq, name="x")
        layer = L.MultiHeadAttention(2, 3) if name == "MultiHeadAttention" else L.GroupQueryAttention(4, 2, 1)
        return k.Model(x, layer(x, x), name=name)
    if name in ("Attention", "AdditiveAttention"):
        x = k.Input(seq, name="x")
        return k.Model(x, getattr(L, name)()([x, x]), name=name)
    entry = simple.get(name)
    if entry is None:
        return None
    layer, shape = entry()  # built only when probed: a class this Keras lacks fails alone
    return _seq(k, name, layer, shape)


def classify(name: str) -> str | None:
    """Why ``name`` is not counted (None: a tensor layer)."""
    if name in NOT_TENSOR:
        return "not a tensor layer on its own (base class, cell, wrapper of Python code, string/adapt() preprocessing)"
    if name.startswith(RANDOM_PREFIXES) and name not in ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                                                          "AlphaDropout", "GaussianDropout", "GaussianNoise"):
        return "random image augmentation (identity at inference, random in training)"
    return None


def run() -> dict:
    from porter.keras_to_torch.codegen import plan_model

    tensor, skipped, handled, left = [], {}, [], {}
    for name in classes():
        why = classify(name)
        if why:
            skipped[name] = why
            continue
        tensor.append(name)
        try:
            model = tiny_model(name)
        except Exception as exc:  # the probe itself could not be built in this Keras
            left[name] = f"probe not built ({type(exc).__name__}: {str(exc)[:80]})"
            continue
        if model is None:
            left[name] = "no probe written (image preprocessing / other)"
            continue
        try:
            plan = plan_model(model)
        except Exception as exc:
            left[name] = f"planning raised {type(exc).__name__}: {str(exc)[:100]}"
            continue
        if plan.unsupported:
            left[name] = "; ".join(plan.unsupported)[:160]
            continue
        try:  # model.py written, rebuilt and loaded with every weight (what `porter convert` writes)
            import tempfile

            from porter.keras_to_torch.codegen import write_folder

            with tempfile.TemporaryDirectory() as folder:
                write_folder(plan, model, folder, name, "nhwc")
            handled.append(name)
        except Exception as exc:
            left[name] = f"writing model.py failed: {type(exc).__name__}: {str(exc)[:100]}"
    return {"handled": handled, "total": len(tensor), "left": left, "not_counted": skipped}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run()
    print(f"keras layers writer: {len(result['handled'])} / {result['total']} tensor layers of keras.layers handled "
          f"({len(result['not_counted'])} classes not counted)")
    print("left:")
    for name, why in sorted(result["left"].items()):
        print(f"  {name}: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
