"""Routes: each reads a source, builds one intermediate, and writes the target (conversion.py picks one).

    direct       direct.py          torch checkpoint <-> porter's / keras-hub's Keras model, weights moved by
                                    mappings/<family>.toml (tf_weights.py reads the TF side)
    graph        graph_tf.py        HF folder (hf_source.py) | .pt2 | .onnx (porter's ONNX -> torch)
                                    -> torch.export ExportedProgram -> porter/graph_to_tf -> SavedModel;
                 graph_tflite.py    ... -> model.tflite (TFLite built-ins), verified by LiteRT alone
    onnx         onnx_pipeline.py   torch (to_onnx.py, zoo_onnx_export.py, hf_source.py) | TF (tf2onnx,
                                    to_onnx_leftovers.py) | .onnx -> ONNX -> model.onnx, or model.py
                                    (onnx_to_torch_folder.py); onnx_graph.py reads ONNX graphs
    keras layers keras_layers.py    a Keras model -> porter/keras_to_torch -> model.py, one module per layer
    legacy tf    legacy_tf.py       a transformers 4.x tf_model.h5 -> an HF PyTorch folder (mappings/hf_legacy_tf.toml)
"""
