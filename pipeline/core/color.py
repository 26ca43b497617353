"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors"): luminance-only
transfer and colour histogram matching. Images are (B, 3, H, W) RGB in [0,1]."""

from __future__ import annotations

import torch

# ITU-R BT.601 RGB -> YIQ, the space used by Gatys et al. 2017 for luminance-only transfer.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _apply(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _apply(torch.linalg.inv(_RGB_TO_YIQ), image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The luminance replicated to three channels: what the network sees in luminance mode."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def recombine(luma_image: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance of the stylized image with the chrominance (I, Q) of the content."""
    y = rgb_to_yiq(luma_image)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], 1)).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-8)
    vals = vals.rsqrt() if inverse else vals.sqrt()
    return vecs @ torch.diag(vals) @ vecs.T


def match_color(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Linear colour transfer: recolour `source` so its RGB mean and covariance match `reference`'s.

    Gatys et al. 2017 use it on the style image before the transfer ("colour histogram matching");
    the style's strokes then arrive in the content's colours.
    """

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = x[0].reshape(3, -1).double()  # (3, N)
        mu = pixels.mean(1, keepdim=True)
        centered = pixels - mu
        cov = centered @ centered.T / pixels.shape[1] + 1e-5 * torch.eye(3, dtype=pixels.dtype)
        return pixels, mu, cov

    src, mu_s, cov_s = stats(source)
    _, mu_r, cov_r = stats(reference)
    transform = _sqrtm(cov_r) @ _sqrtm(cov_s, inverse=True)
    out = transform @ (src - mu_s) + mu_r
    return out.reshape(source.shape).to(source.dtype).clamp(0, 1)
