"""Label-preserving perturbations of test images, for the robustness part of the evaluation (what
Lakera's MLTest sold): the boxes stay where they are, only the pixels change.

`strength` per kind: brightness, the factor on pixel values (0.6 darkens); blur, the Gaussian sigma in
pixels; jpeg, the JPEG quality (1-100); noise, the standard deviation of Gaussian noise on [0, 1] pixels
(seeded per image, so a re-run perturbs identically)."""

from __future__ import annotations

import io
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.functional import gaussian_blur, pil_to_tensor, to_pil_image

KINDS = ("brightness", "blur", "jpeg", "noise")


def perturb(image: torch.Tensor, kind: str, strength: float, seed: int) -> torch.Tensor:
    """A perturbed copy of a float RGB image in [0, 1] (C, H, W)."""
    if kind == "brightness":
        return (image * strength).clamp(0, 1)
    if kind == "blur":
        radius = max(1, int(3 * strength))
        return gaussian_blur(image, kernel_size=2 * radius + 1, sigma=strength)
    if kind == "jpeg":
        buffer = io.BytesIO()
        to_pil_image(image).save(buffer, format="JPEG", quality=int(strength))
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            return pil_to_tensor(decoded.convert("RGB")).float() / 255
    if kind == "noise":
        generator = torch.Generator().manual_seed(seed)
        return (image + strength * torch.randn(image.shape, generator=generator)).clamp(0, 1)
    raise ValueError(f"unknown perturbation kind {kind!r}; known: {', '.join(KINDS)}")


def check(perturbations: list[dict[str, Any]]) -> None:
    """Fail before any prediction on a perturbation the trainer does not know."""
    for entry in perturbations:
        if entry.get("kind") not in KINDS or not isinstance(entry.get("strength"), (int, float)) or not entry.get("name"):
            raise ValueError(f"perturbation {entry!r}: expected {{name, kind (one of {', '.join(KINDS)}), strength (a number)}}")
