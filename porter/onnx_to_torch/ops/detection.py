"""NonMaxSuppression: greedy per batch and class, as the ONNX reference selects (a runtime helper:
the number of boxes kept depends on the values)."""

from __future__ import annotations

from porter.onnx_to_torch import runtime
from porter.onnx_to_torch.context import emit
from porter.onnx_to_torch.registry import register


@register("NonMaxSuppression", since=10)
def NonMaxSuppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None, score_threshold=None, *,
                      center_point_box=0):
    return emit(runtime.non_max_suppression, boxes, scores, max_output_boxes_per_class, iou_threshold,
                score_threshold, bool(center_point_box))
