"""Loss ops, evaluated as ONNX defines them (useful to check a converted training graph)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.onnx_to_torch.registry import register

_REDUCTIONS = ("none", "sum", "mean")


def _nll(log_prob, target, weight, ignore_index, reduction):
    ignore = -100 if ignore_index is None else ignore_index
    return F.nll_loss(log_prob, target.long(), weight, ignore_index=ignore, reduction=reduction)


@register("NegativeLogLikelihoodLoss", allowed={"reduction": _REDUCTIONS})
def NegativeLogLikelihoodLoss(input, target, weight=None, *, ignore_index=None, reduction="mean"):
    return _nll(input, target, weight, ignore_index, reduction)


@register("SoftmaxCrossEntropyLoss", allowed={"reduction": _REDUCTIONS})
def SoftmaxCrossEntropyLoss(scores, labels, weights=None, *, ignore_index=None, reduction="mean"):
    log_prob = torch.log_softmax(scores, dim=1)
    return _nll(log_prob, labels, weights, ignore_index, reduction), log_prob
