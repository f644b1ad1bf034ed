"""The plugin API: every name a dfkd plugin may import, and nothing else is promised.

``from dfkd.api import hookimpl, option, DataFreeOptions`` stays free of torch, so a plugin's
entry-point module (which registers records) keeps ``dfkd --help`` fast; the building blocks
that need torch (synthesizers, generators, loss terms, pools) are loaded on first use.
docs/plugins.md documents each name; names not listed in ``__all__`` may change in any release.
"""

from __future__ import annotations

import importlib
from typing import Any

from dfkd import __version__
from dfkd.errors import DfkdError, UsageError
from dfkd.hookspecs import hookimpl
from dfkd.options import option
from dfkd.tasks import CLASSIFICATION, SEGMENTATION

#: name -> "module:attribute", imported the first time the name is used
_LAZY = {
    # options every data-free method shares (torch-free)
    "DataFreeOptions": "dfkd.synthesis.options:DataFreeOptions",
    "default_preset": "dfkd.synthesis.options:default_preset",
    "GenerativeOptions": "dfkd.synthesis.generative_options:GenerativeOptions",
    "GeneratorKind": "dfkd.synthesis.generative_options:GeneratorKind",
    "Schedule": "dfkd.synthesis.options:Schedule",
    # the synthesizer contract
    "Synthesizer": "dfkd.synthesis.base:Synthesizer",
    "SynthesisContext": "dfkd.synthesis.base:SynthesisContext",
    "SynthesisResult": "dfkd.synthesis.base:SynthesisResult",
    "GenerativeSynthesizer": "dfkd.synthesis.generative:GenerativeSynthesizer",
    "warn_without_batchnorm": "dfkd.synthesis.base:warn_without_batchnorm",
    # generators
    "Generator": "dfkd.synthesis.generators:Generator",
    "LargeGenerator": "dfkd.synthesis.generators:LargeGenerator",
    "GeneratorA": "dfkd.synthesis.generators:GeneratorA",
    "GeneratorB": "dfkd.synthesis.generators:GeneratorB",
    "reset_parameters_dcgan": "dfkd.synthesis.generators:reset_parameters_dcgan",
    # BatchNorm-statistics and feature hooks
    "BNStatsHook": "dfkd.synthesis.bn_hooks:BNStatsHook",
    "InstanceMeanHook": "dfkd.synthesis.bn_hooks:InstanceMeanHook",
    "attach_bn_hooks": "dfkd.synthesis.bn_hooks:attach_bn_hooks",
    "has_batchnorm": "dfkd.synthesis.bn_hooks:has_batchnorm",
    "MomentumBNStatistics": "dfkd.synthesis.rounds:MomentumBNStatistics",
    # pieces of re-initialised-generator synthesis rounds
    "balanced_labels": "dfkd.synthesis.rounds:balanced_labels",
    "class_layouts": "dfkd.synthesis.rounds:class_layouts",
    "BestIterate": "dfkd.synthesis.rounds:BestIterate",
    "PooledInversion": "dfkd.synthesis.rounds:PooledInversion",
    "PooledInversionOptions": "dfkd.synthesis.rounds_options:PooledInversionOptions",
    # loss terms
    "kd_kl": "dfkd.synthesis.losses:kd_kl",
    "bn_statistics": "dfkd.synthesis.losses:bn_statistics",
    "one_hot_ce": "dfkd.synthesis.losses:one_hot_ce",
    "entropy": "dfkd.synthesis.losses:entropy",
    "class_balance": "dfkd.synthesis.losses:class_balance",
    "activation_l1": "dfkd.synthesis.losses:activation_l1",
    "agreement_mask": "dfkd.synthesis.losses:agreement_mask",
    "adversarial_kl": "dfkd.synthesis.losses:adversarial_kl",
    "js_divergence": "dfkd.synthesis.losses:js_divergence",
    "adversarial_l1": "dfkd.synthesis.losses:adversarial_l1",
    "tv_l1": "dfkd.synthesis.losses:tv_l1",
    "tv_l2": "dfkd.synthesis.losses:tv_l2",
    "l2_prior": "dfkd.synthesis.losses:l2_prior",
    # augmentation and image handling
    "jitter_flip": "dfkd.synthesis.augment:jitter_flip",
    "random_resized_crop": "dfkd.synthesis.augment:random_resized_crop",
    "clip_to_pixel_range": "dfkd.synthesis.augment:clip_to_pixel_range",
    "random_crop_flip": "dfkd.data.pipeline:random_crop_flip",
    "normalize": "dfkd.data.pipeline:normalize",
    "denormalize": "dfkd.data.pipeline:denormalize",
    "InputFormat": "dfkd.data.pipeline:InputFormat",
    "ImagePool": "dfkd.synthesis.pool:ImagePool",
    "save_grid": "dfkd.synthesis.grid:save_grid",
    # files, weights, models and datasets, for plugins with commands of their own
    "write_atomic": "dfkd.fileio:write_atomic",
    "write_json": "dfkd.fileio:write_json",
    "save_weights": "dfkd.weights:save_weights",
    "read_meta": "dfkd.weights:read_meta",
    "build_model": "dfkd.models:build_model",
    "model_input_size": "dfkd.models:model_input_size",
    "open_dataset": "dfkd.data:open_dataset",
    "load_teacher": "dfkd.training.setup:load_teacher",
    "build": "dfkd.training.setup:build",
    "make_accelerator": "dfkd.training.setup:make_accelerator",
    "open_session": "dfkd.training.session:open_session",
    "Session": "dfkd.training.session:Session",
    "default_weights_path": "dfkd.training.setup:default_weights_path",
    "create_run": "dfkd.training.runs:create_run",
    "default_run_path": "dfkd.training.runs:default_run_path",
    "versions": "dfkd.training.runs:versions",
    "RunDir": "dfkd.training.runs:RunDir",
    "get_plugins": "dfkd.plugins:get_plugins",
    "Plugins": "dfkd.plugins:Plugins",
    # the command line: one style for plugin commands (docs/plugins.md, "Commands")
    "cli_options": "dfkd.cli.options",
    "console": "dfkd.cli.console:console",
    "err_console": "dfkd.cli.console:err_console",
    "guarded": "dfkd.cli.console:guarded",
    "require_options": "dfkd.cli.console:require_options",
}

__all__ = [
    "__version__",
    "hookimpl",
    "option",
    "DfkdError",
    "UsageError",
    "CLASSIFICATION",
    "SEGMENTATION",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"dfkd.api has no {name!r}; the plugin API is dfkd.api.__all__")
    module_name, _, attr = target.partition(":")
    value = importlib.import_module(module_name)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
