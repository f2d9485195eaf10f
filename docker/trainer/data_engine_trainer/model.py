"""The detector: torchvision's FCOS head on a tiny convolutional backbone, built with no pretrained
weights (none are downloaded at run time), sized by the `width` hyperparameter."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.anchor_utils import AnchorGenerator


def _block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: independent of the per-GPU batch size, and nothing to sync across ranks.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(8, out_channels),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(nn.Module):
    """Two feature maps, at strides 8 and 16, with `out_channels` channels each (what FCOS expects)."""

    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(
            _block(3, width, 2), _block(width, width, 1), _block(width, 2 * width, 2), _block(2 * width, 4 * width, 2)
        )
        self.down = _block(4 * width, 4 * width, 2)
        self.out_channels = 4 * width

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stride8 = self.stem(x)
        return OrderedDict([("0", stride8), ("1", self.down(stride8))])


def build_detector(num_classes: int, hyperparameters: dict[str, Any]) -> FCOS:
    """`num_classes` real classes; label 0 is the background."""
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((1.0,), (1.0,)))
    backbone = TinyBackbone(int(hyperparameters["width"]))
    # Checkpoints written before `head_convs` existed have torchvision's four.
    head = FCOSHead(backbone.out_channels, 1, num_classes + 1, num_convs=int(hyperparameters.get("head_convs", 4)))
    return FCOS(
        backbone,
        num_classes=num_classes + 1,
        min_size=int(hyperparameters["min_size"]),
        max_size=int(hyperparameters["max_size"]),
        anchor_generator=anchors,
        head=head,
        score_thresh=0.05,
        detections_per_img=100,
    )
