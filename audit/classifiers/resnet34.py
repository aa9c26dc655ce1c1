"""ResNet-34 (He et al. 2016) written without torchvision, in torchvision's state-dict layout.

The parameter and buffer names and shapes equal those of ``torchvision.models.resnet34()`` with its
``fc`` replaced by ``Linear(512, num_outputs)``: ``conv1``, ``bn1``, ``layer1`` … ``layer4`` (3, 4,
6 and 3 BasicBlocks of 64, 128, 256 and 512 channels, each block ``conv1``/``bn1``/``conv2``/``bn2``;
the first block of layers 2–4 has a stride of 2 and a ``downsample.0`` 1×1 conv plus
``downsample.1`` BatchNorm), then ``fc``. So a checkpoint saved from the torchvision model loads
here unchanged. ``tests/data/fairface/resnet34_fc18_keys.json`` lists every key and shape of the
18-output variant that FairFace uses.
"""

from __future__ import annotations

import torch
from torch import nn

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (channels, blocks, first stride)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution, padding 1, no bias (as in torchvision)."""
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a residual connection (ReLU after the sum)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet34(nn.Module):
    """ResNet-34 mapping (N, 3, H, W) ImageNet-normalised images to (N, num_outputs) logits.

    Args:
        num_outputs: width of the final linear layer (18 for FairFace, 1000 for ImageNet).
    """

    def __init__(self, num_outputs: int = 18) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = 64
        for index, (c_out, blocks, stride) in enumerate(STAGES, start=1):
            layers = [BasicBlock(c_in, c_out, stride)] + [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))
            c_in = c_out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def key_manifest(module: nn.Module) -> dict[str, list[int]]:
    """Every state-dict key of ``module`` with its shape, in state-dict order."""
    return {key: list(value.shape) for key, value in module.state_dict().items()}
