"""TensorFlow's device for ``--device``, refusing a GPU TensorFlow cannot see.

TensorFlow places ops softly: under ``tf.device("/GPU:0")`` on a machine where TensorFlow has no GPU (its CPU-only
build beside a CUDA torch, or CUDA libraries that do not match the driver) every op runs on the CPU and nothing says
so, and a report would call a CPU run a GPU one. So a GPU TensorFlow does not list is refused (exit 2), and the
runners record where their outputs were actually computed (``Runner.placed``)."""

from __future__ import annotations

from porter.errors import PorterError


def tf_device(tf, device: str) -> str:
    if not device.startswith("cuda"):
        return "/CPU:0"
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        raise PorterError(
            f"--device {device}: TensorFlow sees {len(gpus)} GPU(s) here"
            + (f" ({', '.join(g.name for g in gpus)})" if gpus else "")
            + ", so its side would run on the CPU while the report said GPU",
            hint="install TensorFlow's CUDA build (pip install 'tensorflow[and-cuda]', its CUDA libraries matching the "
                 "driver), or use --device cpu")
    return f"/GPU:{index}"


def placed(tensors) -> str | None:
    """The device the first output tensor lives on (TensorFlow's own name: /job:localhost/.../device:GPU:0)."""
    for t in tensors:
        name = getattr(t, "device", None)
        if name:
            return str(name).rsplit("/", 1)[-1].replace("device:", "")
    return None
