"""The per-epoch learning-rate schedules the student (and, optionally, a generator) follow."""

from __future__ import annotations

import pytest
import torch

from dfkd.errors import UsageError
from dfkd.optim import make_optimizer, make_scheduler


def rates(schedule: str, epochs: int, milestones=()) -> list[float]:
    """The rate in force during each epoch, starting from 1."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = make_scheduler(optimizer, schedule, epochs, milestones)
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_cosine_starts_at_the_rate_and_decays_towards_zero():
    seen = rates("cosine", 4)
    assert seen[0] == 1.0 and seen == sorted(seen, reverse=True)
    assert seen[2] == pytest.approx(0.5)


def test_multistep_drops_tenfold_at_the_given_epochs():
    assert rates("multistep", 5, (1, 3)) == pytest.approx([1.0, 0.1, 0.1, 0.01, 0.01])


def test_multistep_without_milestones_drops_at_60_75_90_percent():
    seen = rates("multistep", 20)
    assert seen[11] == 1.0 and seen[12] == pytest.approx(0.1)
    assert seen[15] == pytest.approx(0.01) and seen[18] == pytest.approx(0.001)


def test_constant_keeps_the_rate():
    assert rates("constant", 3) == [1.0, 1.0, 1.0]


def test_an_unknown_schedule_names_the_known_ones():
    with pytest.raises(UsageError, match="cosine, multistep, constant"):
        rates("zigzag", 3)


@pytest.mark.parametrize(("kind", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_make_optimizer_builds_the_named_kind_with_decay(kind, cls):
    optimizer = make_optimizer([torch.zeros(1, requires_grad=True)], kind, 0.5, 0.9, 1e-4)
    assert type(optimizer) is cls
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(UsageError, match="sgd or adam"):
        make_optimizer([torch.zeros(1, requires_grad=True)], "lbfgs", 0.5, 0.9, 0.0)
