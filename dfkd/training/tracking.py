"""`--log-with`: watch a run while it trains, through accelerate's experiment trackers.

Nothing logs anywhere unless asked. The loop calls these three functions; when the accelerator
has no trackers each is a no-op, so a run without `--log-with` behaves as before. TensorBoard's
events land in ``RUN_DIR/dfkd/`` (``tensorboard --logdir RUN_DIR``); other trackers log to
their own services under the project name ``dfkd``, the run named after its directory.
"""

from __future__ import annotations

import math
from typing import Any

from dfkd.errors import UsageError

PROJECT = "dfkd"

#: the pip package each accelerate tracker needs, where its name differs from the tracker's
_PACKAGES = {"comet_ml": "comet-ml"}


def tracker_names(log_with: str | None) -> list[str]:
    """The trackers ``--log-with a,b`` asks for; an unknown name or a missing package is one
    line, raised before any run directory exists (accelerate itself would drop the tracker
    silently)."""
    if not log_with:
        return []
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    names = [n.strip() for n in log_with.split(",") if n.strip()]
    known = [t for t in LoggerType.list() if t != "all"]
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name == "all":
            continue
        if name not in known:
            raise UsageError(f"Unknown tracker '{name}' for --log-with. Known: {', '.join(known)}.")
        if name not in available:
            package = _PACKAGES.get(name, name)
            raise UsageError(f"--log-with {name} needs {package}: pip install {package}")
    return names


def start_tracking(accelerator: Any, run: Any) -> None:
    """Open the trackers with the run's recorded options as its configuration."""
    if not accelerator.log_with:
        return
    options = run.read_config()["options"]
    flat = {**options, **options.get("resolved_options", {})}
    flat.pop("resolved_options", None)
    accelerator.init_trackers(
        PROJECT,
        config={k: _scalar(v) for k, v in flat.items()},
        init_kwargs={"wandb": {"name": run.path.name}},
    )


def log_epoch(accelerator: Any, row: dict[str, Any], images: Any) -> None:
    """One epoch's metrics row (at step = epoch) and, for TensorBoard, the sample grid."""
    if not accelerator.trackers:
        return
    step = row["epoch"]
    values = {
        k: v
        for k, v in row.items()
        if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    accelerator.log(values, step=step)
    if images is not None and any(t.name == "tensorboard" for t in accelerator.trackers):
        from torchvision.utils import make_grid

        grid = make_grid(
            images.detach().float().cpu().clamp(0, 1),
            nrow=max(1, math.ceil(math.sqrt(images.shape[0]))),
        )
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        writer.add_image("samples", grid, step)
        writer.flush()


def end_tracking(accelerator: Any) -> None:
    """Close the trackers. Not ``accelerator.end_training()``: that also destroys the process
    group, which a multi-process caller may still need after the loop."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def _scalar(value: Any) -> Any:
    """Trackers take a flat configuration of scalars (TensorBoard's hparams refuse lists)."""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)
