"""TagsSettings: safe defaults, and values that cannot work are refused with a message."""

from __future__ import annotations

import pytest

from controller import errors
from controller.tags.settings import Counters, TagsSettings


def test_defaults() -> None:
    s = TagsSettings()
    assert s.drift_interval == 300 and s.budget_per_minute == 60
    assert (s.lease_duration, s.lease_renew_deadline, s.lease_retry) == (15, 10, 2)
    # a dead leader is replaced within 30 s (the duration plus two retries at worst)
    assert s.lease_duration + 2 * s.lease_retry <= 30


@pytest.mark.parametrize(
    "changes",
    [
        {"drift_interval": 0},
        {"budget_per_minute": -1},
        {"queue_size": True},
        {"flush_interval": "1"},
        {"lease_renew_deadline": 20},
        {"lease_retry": 10},
        {"lease_name": ""},
    ],
)
def test_refused(changes: dict[str, object]) -> None:
    with pytest.raises(errors.ConfigError):
        TagsSettings(**changes)  # type: ignore[arg-type]


def test_counters() -> None:
    c = Counters()
    c.count_tag_write("create")
    c.count_tag_drop()
    c.count_drift_check("r", "moved")
    c.count_tag_move("watch")
    c.count_budget_wait("r", 1.5)
    assert c.writes == {"create": 1} and c.drops == 1 and c.checks == {("r", "moved"): 1}
    assert c.moves == {"watch": 1} and c.budget_waited == 1.5
