"""Image generators for the generator-based methods, and CMI's re-initialisation.

The layer layout (``l1`` holding the projection, ``conv_blocks`` the rest) follows the reference
benchmark, so a state dict saved there loads here unchanged
(docs/methods/framework.md#generators).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Generator(nn.Module):
    """CMI's generator (docs/methods/framework.md#generators): z → Linear → two nearest ×2
    upsamplings → image in [0, 1].

    The projection starts at ``width · ngf`` channels; ``width=2`` is CMI's ``Generator`` and
    ``width=4`` the ``LargeGenerator`` of DAFL/ZSKT/DFQ. Two ×2 upsamplings mean the image side must
    be divisible by 4 (28 px works: 7 → 14 → 28). ``width`` and ``ngf`` are options because a
    LeNet-scale teacher needs far less generator than the reference's 64-wide one.
    """

    def __init__(
        self,
        nz: int = 256,
        ngf: int = 64,
        img_size: int = 32,
        channels: int = 3,
        *,
        width: int = 2,
        conv_bias: bool = False,
    ) -> None:
        super().__init__()
        if img_size % 4:
            raise ValueError(
                f"img_size must be divisible by 4 (two ×2 upsamplings), got {img_size}"
            )
        self.nz = nz
        self.init_size = img_size // 4
        self.start_channels = width * ngf
        self.l1 = nn.Sequential(nn.Linear(nz, self.start_channels * self.init_size**2))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(self.start_channels),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(self.start_channels, 2 * ngf, 3, stride=1, padding=1, bias=conv_bias),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, stride=1, padding=1, bias=conv_bias),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, channels, 3, stride=1, padding=1),
            *self._output_layers(channels),
        )

    def _output_layers(self, channels: int) -> list[nn.Module]:
        """The squashing at the end; a Sigmoid gives images in [0, 1], normalised afterwards."""
        return [nn.Sigmoid()]

    def forward(self, z: Tensor) -> Tensor:
        # Flatten so that z of shape (B, nz, 1, 1) works as well as (B, nz).
        out = self.l1(z.flatten(1))
        out = out.view(z.shape[0], self.start_channels, self.init_size, self.init_size)
        # The generator is most of a generative method's compute. In channels-last layout the
        # nearest upsamplings run over ten times and a whole call 1.4 to 2.7 times faster on the
        # CPU (benchmarks/generator_speed.py), with the same numbers; the image is handed on in
        # the usual layout, which costs one copy of a small tensor.
        out = self.conv_blocks(out.contiguous(memory_format=torch.channels_last))
        return out.contiguous()


class LargeGenerator(Generator):
    """The wider generator of DAFL, ZSKT, DFQ and CuDFKD: a ``4 · ngf``-channel projection."""

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, channels: int = 3) -> None:
        super().__init__(nz, ngf, img_size, channels, width=4)


class GeneratorA(Generator):
    """DFAD's generator (docs/methods/dfad.md#objective): convolutions with bias, then Tanh and a
    non-affine BatchNorm2d, so each output channel is standardised over the batch. Its images go
    to the networks as they are, with no dataset normaliser.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, channels: int = 3) -> None:
        super().__init__(nz, ngf, img_size, channels, width=2, conv_bias=True)

    def _output_layers(self, channels: int) -> list[nn.Module]:
        return [nn.Tanh(), nn.BatchNorm2d(channels, affine=False)]


class GeneratorB(nn.Module):
    """DFAD's segmentation generator (docs/methods/dfad.md#segmentation), DCGAN-style: z → Linear
    → (8·ngf, s/16, s/16) → BatchNorm → four ×2 transposed convolutions (kernel 4, stride 2,
    8·ngf → 4·ngf → 2·ngf → ngf → ngf, each BatchNorm + LeakyReLU 0.2) → 3×3 conv → Tanh. The
    output in [−1, 1] goes to the networks as it is: the reference's segmentation data is
    normalised with mean 0.5 and std 0.5, to the same range. Weights start as DCGAN's."""

    def __init__(
        self, nz: int = 256, ngf: int = 64, img_size: int = 128, channels: int = 3
    ) -> None:
        super().__init__()
        if img_size % 16:
            raise ValueError(
                f"img_size must be divisible by 16 (four ×2 upsamplings), got {img_size}"
            )
        self.nz = nz
        self.init_size = img_size // 16
        self.start_channels = 8 * ngf
        # Flatten first, as the reference's: its checkpoints (project.1.*) load as they are
        self.project = nn.Sequential(
            nn.Flatten(), nn.Linear(nz, self.start_channels * self.init_size**2)
        )
        widths = (8 * ngf, 4 * ngf, 2 * ngf, ngf, ngf)
        layers: list[nn.Module] = [nn.BatchNorm2d(self.start_channels)]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(ngf, channels, 3, padding=1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        reset_parameters_dcgan(self)

    def forward(self, z: Tensor) -> Tensor:
        out = self.project(z)
        out = out.view(z.shape[0], self.start_channels, self.init_size, self.init_size)
        return self.main(out)


_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def reset_parameters_dcgan(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """CMI's per-synthesis re-initialisation (docs/methods/framework.md#generators):
    Conv/ConvTranspose/Linear weights ~ N(0, 0.02) and biases 0; BatchNorm γ ~ N(1, 0.02), β = 0.

    Running statistics are left alone, as in the reference: the generator synthesizes in train
    mode, where they are not used. Pass a seeded ``generator`` (on the module's device) for a
    reproducible draw.
    """
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            m.weight.normal_(0.0, 0.02, generator=generator)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, _BATCHNORMS) and m.affine:
            m.weight.normal_(1.0, 0.02, generator=generator)
            m.bias.zero_()
