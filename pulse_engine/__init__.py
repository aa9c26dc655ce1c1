"""PULSE latent-space search over pluggable face generators.

Modules (data flows top to bottom):

- ``generators``: the :class:`~pulse_engine.generators.base.SearchableGenerator` interface and
  clean-room implementations (DCGAN, StyleGAN1 in PULSE's layout, StyleGAN2) with safe loaders.
- ``downsample``: the antialiased bicubic operator that makes LR inputs and drives the loss.
- ``losses``: L2 / L1 data terms with PULSE's eps clamp, GEOCROSS, and the loss-string parser.
- ``schedule``: PULSE's learning-rate multipliers.
- ``sphere``: projection of latents and noise maps onto their spheres.
- ``search``: the batched, seeded, restartable search itself.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
