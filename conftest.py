pytest_plugins = ["dfkd.testing"]
