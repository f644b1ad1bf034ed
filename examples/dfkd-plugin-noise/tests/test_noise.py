"""The whole contract a dfkd method keeps, from dfkd.testing's pytest plugin."""

import dfkd_plugin_noise

from dfkd.testing import MethodContract


class TestContract(MethodContract):
    method = "noise"
    module = dfkd_plugin_noise
    distribution = "dfkd-plugin-noise"
    learn_options = ["epochs=3", "ep_steps=40", "batch_size=32", "g_steps=10", "lr=0.05"]
