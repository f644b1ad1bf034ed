"""What the data-free methods share: generators (``generators``), BatchNorm-statistics hooks
(``bn_hooks``), loss terms (``losses``), in-loop augmentation (``augment``), the image pool
(``pool``) and sample grids (``grid``).

Import the submodules directly; this package imports nothing so that the plugin layer stays
free of torch.
"""
