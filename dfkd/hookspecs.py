"""The hook specifications: the contract between the dfkd core and its plugins.

Each ``register`` takes only the keywords its hook's docstring shows: any other (a typo) fails
the plugin's loading instead of being silently ignored.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("dfkd")
hookimpl = HookimplMarker("dfkd")


@hookspec
def register_methods(register):
    """Register data-free methods: ``register(name, synthesizer_factory, summary=, paper=,
    options=<dataclass>, presets={name: {option: value}})``; ``options`` is required."""


@hookspec
def register_models(register):
    """Register architectures: ``register(name, factory, summary=, input_size=, family=)``; the
    factory takes ``num_classes`` and ``in_channels``. A name ending in ':' is a prefix bridge
    (``timm:``) whose factory also receives the text after the colon as ``arg``."""


@hookspec
def register_datasets(register):
    """Register datasets: ``register(name, factory, summary=, num_classes=, channels=,
    image_size=)`` (the last three for ``dfkd datasets``, when known without the data); the
    factory takes ``root``, ``download`` (and ``arg`` for a prefix such as ``folder:``) and returns
    a dataset source."""


@hookspec
def register_losses(register):
    """Register loss terms: ``register(name, function, summary=)``."""


@hookspec
def register_commands(app, plugins):
    """Add commands to the root typer ``app``; ``plugins`` is the loaded plugin set the
    commands should resolve names through (an implementation may take ``app`` alone)."""
