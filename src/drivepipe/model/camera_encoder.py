"""Per-camera image encoder: a (torchvision or tiny) trunk at stride `feature_downsample` plus a 1x1 head that
predicts lift-splat depth logits and context features.

Shape legend: B = batch, N = cameras, H, W = image px, h, w = feature cells (ceil(H / ds), ceil(W / ds)),
D = depth bins, C = context channels, F = trunk channels.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

# ImageNet statistics, applied to images in [0, 1]; the batch stores uint8 so normalisation lives in the model.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# stride -> (number of leading children kept, output channels); resnet children after the stem are layer1..layer4.
_RESNET_CUTS = {4: 1, 8: 2, 16: 3, 32: 4}
_RESNET_WIDTHS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
                  "resnet50": (256, 512, 1024, 2048)}
_EFFNET_CUTS = {4: (3, 24), 8: (4, 40), 16: (6, 112), 32: (8, 320)}


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _tiny_trunk(downsample: int) -> tuple[nn.Module, int]:
    """A few conv-BN-ReLU layers: log2(downsample) stride-2 stages plus one stride-1 layer (cheap CPU default)."""
    num_stages = round(math.log2(downsample))
    if 2 ** num_stages != downsample:
        raise ValueError(f"model.feature_downsample: tiny backbone needs a power of two, got {downsample}")
    layers, c_in = [], 3
    for k in range(num_stages):
        c_out = min(16 * 2 ** k, 64)
        layers.append(_conv_bn_relu(c_in, c_out, 2))
        c_in = c_out
    layers.append(_conv_bn_relu(c_in, max(c_in, 32), 1))
    return nn.Sequential(*layers), max(c_in, 32)


def _load_local(module: nn.Module, pretrained_path: str) -> None:
    """Load a local torchvision state_dict file into the full network (before truncation); never downloads."""
    path = Path(pretrained_path)
    if not path.is_file():
        raise ValueError(f"model.pretrained_path: {path} is not a file")
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)


def _torchvision_trunk(backbone: str, downsample: int, pretrained_path: str) -> tuple[nn.Module, int]:
    import torchvision

    if backbone in _RESNET_WIDTHS:
        if downsample not in _RESNET_CUTS:
            raise ValueError(f"model.feature_downsample: {backbone} supports {sorted(_RESNET_CUTS)}")
        net = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34,
               "resnet50": torchvision.models.resnet50}[backbone](weights=None)
        if pretrained_path:
            _load_local(net, pretrained_path)
        num_layers = _RESNET_CUTS[downsample]
        layers = [net.layer1, net.layer2, net.layer3, net.layer4][:num_layers]
        trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *layers)
        return trunk, _RESNET_WIDTHS[backbone][num_layers - 1]
    if backbone == "efficientnet_b0":
        if downsample not in _EFFNET_CUTS:
            raise ValueError(f"model.feature_downsample: efficientnet_b0 supports {sorted(_EFFNET_CUTS)}")
        net = torchvision.models.efficientnet_b0(weights=None)
        if pretrained_path:
            _load_local(net, pretrained_path)
        num_blocks, channels = _EFFNET_CUTS[downsample]
        return nn.Sequential(*list(net.features.children())[:num_blocks]), channels
    raise ValueError(f"model.backbone: unknown backbone {backbone!r}")


class CameraEncoder(nn.Module):
    """uint8 images -> per-camera depth logits and context features at stride `downsample`.

    Args:
        backbone: "tiny", "resnet18", "resnet34", "resnet50" or "efficientnet_b0".
        downsample: image px per feature cell (model.feature_downsample).
        num_depth_bins: D.
        context_channels: C (model.image_channels).
        pretrained_path: optional local torchvision state_dict of the full classification network.
    """

    def __init__(self, backbone: str, downsample: int, num_depth_bins: int, context_channels: int,
                 pretrained_path: str = "") -> None:
        super().__init__()
        if backbone == "tiny":
            if pretrained_path:
                raise ValueError("model.pretrained_path: the tiny backbone has no pretrained weights")
            self.trunk, trunk_channels = _tiny_trunk(downsample)
        else:
            self.trunk, trunk_channels = _torchvision_trunk(backbone, downsample, pretrained_path)
        neck_channels = max(64, context_channels)
        self.neck = _conv_bn_relu(trunk_channels, neck_channels, 1)
        self.head = nn.Conv2d(neck_channels, num_depth_bins + context_channels, 1)
        self.num_depth_bins = num_depth_bins
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images_BN3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, N, 3, H, W) uint8 RGB -> depth logits (B, N, D, h, w), context (B, N, C, h, w)."""
        if images_BN3HW.dtype != torch.uint8:
            raise TypeError(f"camera encoder: expected uint8 images (B, N, 3, H, W), got {images_BN3HW.dtype}")
        b, n = images_BN3HW.shape[:2]
        x = images_BN3HW.flatten(0, 1).float() / 255.0  # (BN, 3, H, W) in [0, 1]
        x = (x - self.mean) / self.std
        out = self.head(self.neck(self.trunk(x)))  # (BN, D + C, h, w)
        out = out.unflatten(0, (b, n))
        return out[:, :, : self.num_depth_bins], out[:, :, self.num_depth_bins:]
