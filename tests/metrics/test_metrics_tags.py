"""The ModelKitTag record and drift watch counters: ``Metrics`` is a
``controller.tags.settings.TagMetrics`` (structurally: ``controller.metrics`` imports nothing
of ``controller.tags``), and what it counts shows in the exposition."""

from __future__ import annotations

import ast
import inspect
import math
from typing import get_args

from prometheus_client.parser import text_string_to_metric_families

import controller.metrics
from controller.metrics import DRIFT_OUTCOMES, ROLL_OUTCOMES, TAG_WRITE_KINDS, Metrics
from controller.tags.settings import RollOutcome, TagMetrics, WatchOutcome, WriteKind


def _samples(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(m.render().decode())
        for sample in family.samples
    }


def test_metrics_satisfies_the_tag_metrics_protocol_and_renders_what_it_counted() -> None:
    m = Metrics()
    tags: TagMetrics = m  # mypy checks the structure; the calls below check the behaviour
    tags.count_tag_write("create")
    tags.count_tag_write("status")
    tags.count_tag_write("status")
    tags.count_tag_write("conflict")
    tags.count_tag_drop()
    tags.count_drift_check("reg.example:5000", "unchanged")
    tags.count_drift_check("reg.example:5000", "moved")
    tags.count_drift_check("ghcr.io", "digest-missing")
    tags.count_tag_move("watch")
    tags.count_tag_move("admission")
    tags.count_tag_move("watch")
    tags.count_budget_wait("reg.example:5000", 0.75)
    tags.count_budget_wait("reg.example:5000", 1.25)

    samples = _samples(m)

    def at(name: str, **labels: str) -> float:
        return samples[name, frozenset(labels.items())]

    assert at("kitpin_tag_writes_total", kind="create") == 1.0
    assert at("kitpin_tag_writes_total", kind="status") == 2.0
    assert at("kitpin_tag_writes_total", kind="conflict") == 1.0
    assert at("kitpin_tag_writes_total", kind="failed") == 0.0  # pre-created: a zero shows
    assert at("kitpin_tag_queue_drops_total") == 1.0
    assert at("kitpin_drift_checks_total", registry="reg.example:5000", outcome="unchanged") == 1
    assert at("kitpin_drift_checks_total", registry="reg.example:5000", outcome="moved") == 1
    assert at("kitpin_drift_checks_total", registry="ghcr.io", outcome="digest-missing") == 1
    assert at("kitpin_tag_moves_total", seen_by="watch") == 2.0
    assert at("kitpin_tag_moves_total", seen_by="admission") == 1.0
    assert at("kitpin_drift_budget_wait_seconds_total", registry="reg.example:5000") == 2.0


def test_every_protocol_method_is_there_with_the_same_parameters() -> None:
    # At run time too (mypy checks the assignment above, when it checks the tests).
    wanted = {
        name: inspect.signature(member)
        for name, member in vars(TagMetrics).items()
        if name.startswith("count_") and callable(member)
    }
    assert len(wanted) == 6
    assert set(ROLL_OUTCOMES) == set(get_args(RollOutcome))
    for name, signature in wanted.items():
        got = inspect.signature(getattr(Metrics, name))
        assert list(got.parameters) == list(signature.parameters), name


def test_label_sets_are_the_protocols_literals() -> None:
    assert set(TAG_WRITE_KINDS) == set(get_args(WriteKind))
    assert set(DRIFT_OUTCOMES) == set(get_args(WatchOutcome))


def test_values_outside_the_fixed_sets_never_add_a_series() -> None:
    m = Metrics()
    m.count_tag_write("sideways")
    m.count_drift_check("reg.example", "maybe")
    m.count_tag_move("a cat")
    assert m.value("kitpin_tag_writes_total", {"kind": "other"}) == 1.0
    assert m.value("kitpin_drift_checks_total", {"registry": "reg.example", "outcome": "other"})
    assert m.value("kitpin_tag_moves_total", {"seen_by": "other"}) == 1.0
    rendered = m.render().decode()
    assert "sideways" not in rendered and "maybe" not in rendered and "a cat" not in rendered


def test_a_budget_wait_never_decreases_the_counter() -> None:
    m = Metrics()
    m.count_budget_wait("reg.example", 2.0)
    for bad in (-1.0, math.nan, math.inf, 0.0):
        m.count_budget_wait("reg.example", bad)
    assert m.value("kitpin_drift_budget_wait_seconds_total", {"registry": "reg.example"}) == 2.0


def test_metrics_module_does_not_import_controller_tags() -> None:
    tree = ast.parse(inspect.getsource(controller.metrics))
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith("controller.tags")]
