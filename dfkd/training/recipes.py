"""Named training recipes for `dfkd scratch`: the values its training options take unless a flag
gives them. Kept free of torch so that `dfkd scratch --help` can list them without loading it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfkd.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    """What a recipe is, in words for `--help`, and the option values it sets."""

    description: str
    values: dict[str, Any]


SCRATCH_RECIPES = {
    "default": Recipe(
        "dfkd's cosine recipe: SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 256, "
        "200 epochs, cosine to zero",
        {
            "epochs": 200,
            "batch_size": 256,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "cosine",
        },
    ),
    # DataFree's train_scratch.py and its README command, which trained the benchmark's published
    # teachers. Its milestones 120/150/180 are 60/75/90 % of its 200 epochs, the `multistep`
    # default, so they move with --epochs.
    "reference": Recipe(
        "the DataFree benchmark's train_scratch.py: SGD lr 0.1, momentum 0.9, weight decay "
        "1e-4, batch 256, 200 epochs, x0.1 at epochs 120/150/180 (60/75/90 %)",
        {
            "epochs": 200,
            "batch_size": 256,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "schedule": "multistep",
        },
    ),
}


def scratch_recipe(name: str) -> dict[str, Any]:
    """The option values of the recipe called ``name``; an unknown name is a usage error."""
    if name not in SCRATCH_RECIPES:
        raise UsageError(f"Unknown recipe '{name}'. Known recipes: {', '.join(SCRATCH_RECIPES)}.")
    return dict(SCRATCH_RECIPES[name].values)


def recipes_help() -> str:
    """One line per recipe, for the CLI's help."""
    return "; ".join(f"{name}: {recipe.description}" for name, recipe in SCRATCH_RECIPES.items())
