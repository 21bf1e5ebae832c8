"""Keras model -> readable PyTorch that keeps the Keras structure (the "keras layers" writer).

Read from the Keras model itself (its layers, their configs and the functional graph), never from
tf2onnx's graph, which folds BatchNormalization into convolutions and drops Dropout:

    graph.py     the Keras functional graph as a list of layer calls, in graph order
    layers.py    one translator per Keras layer class: the torch module, its forward line, its weights
    runtime.py   the torch classes and helpers a generated model.py carries (Keras BatchNorm, TF 'same' padding)
    codegen.py   model.py + model.safetensors from the translated layers
"""
