"""dfkd: data-free knowledge distillation.

`from dfkd import hookimpl` is the whole plugin API surface; everything heavy (torch and friends)
is imported lazily by the modules that need it, so importing this package stays cheap.
"""

from dfkd.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
