"""The method contract for every method the installed plugins register, each from its `smoke`
preset (dfkd.testing.SmokeContract): one copy of the contract, however many methods there are.
Each plugin's own tests keep what only it knows, such as a setting in which its student learns.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dfkd.plugins import Plugins
from dfkd.synthesis.options import DataFreeOptions
from dfkd.testing import SmokeContract, make_plugins, method_plugin


def _lopes_records(teacher: str, weights: Path, folder: Path) -> list[str]:
    """Lopes reconstructs its inputs from activation records the teacher's owner made on real
    data (`dfkd lopes record`)."""
    from dfkd_plugin_lopes.records import make_records

    path = folder / "contract.lopes.safetensors"
    options = {"out": path, "overwrite": True, "plugins": make_plugins(), "batch_size": 64}
    make_records(teacher, "tiny", teacher_weights=str(weights), **options)
    return [f"records={path}"]


#: methods whose runs need a file besides the teacher, and how their users make it
FILES = {"lopes": _lopes_records}


def _registered() -> list[tuple[str, object, str]]:
    """(method, the plugin object its entry point names, distribution) for every method."""
    plugins = Plugins()
    modules = {dist: plugins.pm.get_plugin(name) for name, (dist, _) in plugins.providers.items()}
    return [(e.name, modules[e.provider], e.provider) for e in plugins.methods]


METHODS = _registered()


class TestRegisteredMethod(SmokeContract):
    teacher = "lenet5_bn"  # every method distils it; the BN-statistics ones need it

    @pytest.fixture(autouse=True, params=METHODS, ids=[m[0] for m in METHODS])
    def registered(self, request: pytest.FixtureRequest) -> None:
        self.method, self.module, self.distribution = request.param

    def prepare(self, teacher_weights: Path, folder: Path) -> list[str]:
        make = FILES.get(self.method)
        return make(self.teacher, teacher_weights, folder) if make else []


def test_every_first_party_method_is_registered():
    """The contract above runs for what is installed: the suite installs every first-party
    plugin, so none may be missing from it."""
    from dfkd.registry import FIRST_PARTY_METHODS

    assert set(FIRST_PARTY_METHODS) <= {m[0] for m in METHODS}


def test_a_method_without_a_smoke_preset_fails_naming_its_plugin():
    plugin, dist = method_plugin("bare", DataFreeOptions, "no presets", options=DataFreeOptions)

    class Bare(SmokeContract):
        method, module, distribution = "bare", plugin, dist

    with pytest.raises(pytest.fail.Exception, match="dfkd-plugin-bare: method 'bare' declares no"):
        Bare().test_contract_presets_resolve()
