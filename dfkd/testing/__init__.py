"""Test helpers for dfkd and its plugins, by concern: ``data`` (tiny datasets), ``plugins``
(plugin sets with autoload off), ``runs`` (tiny runs, interrupted runs, exact comparisons, a
two-process launcher), ``contract`` (the method contract) and ``fixtures`` (the pytest plugin
dfkd installs, entry point ``pytest11``). Import them from here.
"""

from dfkd.testing.contract import LearningContract, MethodContract, SmokeContract
from dfkd.testing.data import (
    TinyDatasetPlugin,
    make_tiny_images,
    make_tiny_scenes,
    write_tiny_camvid,
)
from dfkd.testing.plugins import cpu_context, make_plugins, method_plugin
from dfkd.testing.runs import (
    RUN_FILES,
    KillAfterEpoch,
    assert_complete_run,
    assert_same_state,
    assert_same_student,
    assert_same_tensors,
    checkpoint_objects,
    run_held_elsewhere,
    run_two_processes,
    tiny_run_config,
)

__all__ = [
    "RUN_FILES",
    "KillAfterEpoch",
    "LearningContract",
    "MethodContract",
    "SmokeContract",
    "TinyDatasetPlugin",
    "assert_complete_run",
    "assert_same_state",
    "assert_same_student",
    "assert_same_tensors",
    "checkpoint_objects",
    "cpu_context",
    "make_plugins",
    "make_tiny_images",
    "make_tiny_scenes",
    "method_plugin",
    "run_held_elsewhere",
    "run_two_processes",
    "tiny_run_config",
    "write_tiny_camvid",
]
