"""kornia 0.7.0's ``kornia.filters.canny``, operation for operation, whatever kornia is installed.

ControlNet++ pins ``kornia==0.7.0`` and scores edge adherence with its Canny. Later kornia releases changed
the non-maximum suppression (0.9 keeps one pixel of a tied pair and pads the magnitude at the border),
which moves up to a third of the edge pixels of flat-colour images such as fills and skins. So the
ControlNet++ protocol computes 0.7.0's algorithm here instead of calling the installed library.

Followed: kornia v0.7.0 ``kornia/filters/canny.py`` (``canny``), ``gaussian.py`` (``gaussian_blur2d``,
separable, reflect border), ``filter.py`` (``filter2d``, ``filter2d_separable``), ``sobel.py``
(``spatial_gradient``, unnormalised Sobel, replicate border), ``kernels.py`` (``gaussian``,
``get_canny_nms_kernel``, ``get_hysteresis_kernel``) and ``color/gray.py`` (``rgb_to_grayscale``). Every
tensor operation is the one kornia runs, with the same shapes and order, so the float results match bit
for bit (``tests/test_protocols.py`` compares edge maps with kornia 0.7.0 itself).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["canny"]

_SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
_NMS_KERNELS = [  # get_canny_nms_kernel: centre minus the neighbour in each of the 8 directions
    [[0.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]],
    [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
    [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
]
_HYSTERESIS_KERNELS = [  # get_hysteresis_kernel: each of the 8 neighbours
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
]


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    """rgb_to_grayscale for floating images: 0.299 R + 0.587 G + 0.114 B in the image's dtype."""
    w_r, w_g, w_b = torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype).unbind()
    return w_r * image[..., 0:1, :, :] + w_g * image[..., 1:2, :, :] + w_b * image[..., 2:3, :, :]


def _gaussian_1d(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """kernels.gaussian: a ``(1, size)`` kernel for a ``(1, 1)`` sigma, normalised to sum 1."""
    x = (torch.arange(size, device=sigma.device, dtype=sigma.dtype) - size // 2).expand(1, -1)
    gauss = torch.exp(-x.pow(2.0) / (2 * sigma.pow(2.0)))
    return gauss / gauss.sum(-1, keepdim=True)


def _filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """filter2d with a ``(1, kH, kW)`` kernel: reflect padding to the same size, one depthwise conv2d."""
    b, c, h, w = image.shape
    weights = kernel[:, None, ...].to(device=image.device, dtype=image.dtype).expand(-1, c, -1, -1)
    height, width = weights.shape[-2:]
    # _compute_padding: (left, right, top, bottom), the larger half after
    padding = [
        (width - 1) // 2,
        width - 1 - (width - 1) // 2,
        (height - 1) // 2,
        height - 1 - (height - 1) // 2,
    ]
    padded = F.pad(image, padding, mode="reflect")
    weights = weights.reshape(-1, 1, height, width)
    padded = padded.view(-1, weights.size(0), padded.size(-2), padded.size(-1))
    return F.conv2d(padded, weights, groups=weights.size(0), padding=0, stride=1).view(b, c, h, w)


def _gaussian_blur(
    image: torch.Tensor, kernel_size: tuple[int, int], sigma: tuple[float, float]
) -> torch.Tensor:
    """gaussian_blur2d, separable: along x with sigma[1], then along y with sigma[0]."""
    ky, kx = kernel_size
    if ky % 2 == 0 or kx % 2 == 0 or ky < 1 or kx < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    sigmas = torch.tensor([sigma], device=image.device, dtype=image.dtype)
    kernel_x = _gaussian_1d(kx, sigmas[:, 1].view(1, 1))
    kernel_y = _gaussian_1d(ky, sigmas[:, 0].view(1, 1))
    return _filter2d(_filter2d(image, kernel_x[..., None, :]), kernel_y[..., None])


def _sobel(image: torch.Tensor) -> torch.Tensor:
    """spatial_gradient(normalized=False): ``(B, C, 2, H, W)`` x and y Sobel responses, replicate border."""
    kernel_x = torch.tensor(_SOBEL_X, device=image.device, dtype=image.dtype)
    kernel = torch.stack([kernel_x, kernel_x.transpose(0, 1)])[:, None, ...]
    b, c, h, w = image.shape
    padded = F.pad(image.reshape(b * c, 1, h, w), [1, 1, 1, 1], "replicate")
    return F.conv2d(padded, kernel, groups=1, padding=0, stride=1).reshape(b, c, 2, h, w)


def canny(
    image: torch.Tensor,
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    kernel_size: tuple[int, int] = (5, 5),
    sigma: tuple[float, float] = (1.0, 1.0),
    hysteresis: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """kornia 0.7.0's Canny of a floating ``(B, 1 or 3, H, W)`` image: (suppressed magnitude, edges).

    Edges are 0/1 with ``hysteresis``, else 0 / 0.5 (weak) / 1 (strong), as in kornia 0.7.0.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) image, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"expected a floating image in [0, 1], got {image.dtype}")
    if not 0 < low_threshold <= high_threshold < 1:
        raise ValueError(
            f"thresholds must satisfy 0 < low <= high < 1, got {low_threshold}, {high_threshold}"
        )
    device, dtype = image.device, image.dtype
    if image.shape[1] == 3:
        image = _grayscale(image)
    gradients = _sobel(_gaussian_blur(image, kernel_size, sigma))
    gx, gy = gradients[:, :, 0], gradients[:, :, 1]
    magnitude = torch.sqrt(gx * gx + gy * gy + eps)
    angle = 180.0 * torch.atan2(gy, gx) / math.pi
    angle = torch.round(angle / 45) * 45

    # Non-maximum suppression: a pixel is kept when it is strictly above both neighbours along its direction
    # (the image's outside counts as 0: conv2d's zero padding)
    nms_kernels = torch.tensor(_NMS_KERNELS, device=device, dtype=dtype)[:, None]
    nms_magnitude = F.conv2d(magnitude, nms_kernels, padding=nms_kernels.shape[-1] // 2)
    positive_idx = ((angle / 45) % 8).long()
    negative_idx = (((angle / 45) + 4) % 8).long()
    selected = torch.stack(
        [torch.gather(nms_magnitude, 1, positive_idx), torch.gather(nms_magnitude, 1, negative_idx)], 1
    )
    magnitude = magnitude * (selected.min(dim=1)[0] > 0.0)

    edges = ((magnitude > low_threshold) * 0.5 + (magnitude > high_threshold) * 0.5).to(dtype)
    if not hysteresis:
        return magnitude, edges
    # Hysteresis: a weak pixel next to a strong one becomes strong, until nothing changes
    hysteresis_kernels = torch.tensor(_HYSTERESIS_KERNELS, device=device, dtype=dtype)[:, None]
    edges_old = -torch.ones(edges.shape, device=edges.device, dtype=dtype)
    while ((edges_old - edges).abs() != 0).any():
        weak = (edges == 0.5).float()
        strong = (edges == 1).float()
        neighbours = F.conv2d(edges, hysteresis_kernels, padding=hysteresis_kernels.shape[-1] // 2)
        grown = (neighbours == 1).any(1, keepdim=True).to(dtype) * weak + strong
        edges_old = edges.clone()
        edges = grown + (grown == 0) * weak * 0.5
    return magnitude, grown
