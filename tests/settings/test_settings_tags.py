"""The settings file's ``tags:`` and ``drift:`` sections land in :class:`TagsSettings`."""

from __future__ import annotations

import pytest

from controller import errors, settings
from controller.tags import TagsSettings


def test_defaults_keep_records_and_run_the_drift_watch() -> None:
    """On: a cached review costs one memo lookup, within 5% of records off (docs/tags.md)."""
    loaded = settings.parse_settings_document(None, source="s.yaml")
    assert loaded.tags == TagsSettings()
    assert loaded.tags.records and loaded.tags.drift
    assert loaded.tags.drift_interval == 300 and loaded.tags.budget_per_minute == 60


def test_every_field() -> None:
    loaded = settings.parse_settings_document(
        {
            "tags": {
                "records": True,
                "flushIntervalSeconds": 0.5,
                "queueSize": 500,
                "observationsPerTag": 8,
                "checkedWriteEverySeconds": 600,
            },
            "drift": {
                "enabled": False,
                "intervalSeconds": 2,
                "budgetPerMinute": 600,
                "leaseName": "other-lease",
                "leaseDurationSeconds": 6,
                "leaseRenewDeadlineSeconds": 4,
                "leaseRetrySeconds": 1,
            },
        },
        source="s.yaml",
    )
    assert loaded.tags == TagsSettings(
        records=True,
        flush_interval=0.5,
        queue_size=500,
        observations_per_tag=8,
        checked_write_every=600,
        drift=False,
        drift_interval=2,
        budget_per_minute=600,
        lease_name="other-lease",
        lease_duration=6,
        lease_renew_deadline=4,
        lease_retry=1,
    )


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"tags": {"record": True}}, ["tags", "unknown key", "record"]),
        ({"tags": {"records": "yes"}}, ["tags.records", "true or false"]),
        ({"tags": {"queueSize": 0}}, ["tags.queueSize", "positive integer"]),
        ({"tags": {"queueSize": 1.5}}, ["tags.queueSize", "positive integer"]),
        ({"tags": {"flushIntervalSeconds": 0}}, ["tags.flushIntervalSeconds", "> 0"]),
        ({"drift": {"intervalSeconds": "5m"}}, ["drift.intervalSeconds", "number of seconds"]),
        ({"drift": {"budgetPerMinute": -1}}, ["drift.budgetPerMinute", "positive integer"]),
        ({"drift": {"leaseName": ""}}, ["drift.leaseName", "non-empty"]),
        ({"drift": []}, ["drift", "expected a mapping"]),
        (
            {"drift": {"leaseDurationSeconds": 5, "leaseRenewDeadlineSeconds": 8}},
            ["lease_renew_deadline < lease_duration"],
        ),
    ],
)
def test_mistakes_name_the_field(document: object, words: list[str]) -> None:
    with pytest.raises(errors.ConfigError) as info:
        settings.parse_settings_document(document, source="s.yaml")
    for word in words:
        assert word in str(info.value)
