"""What ``/metrics`` renders: kitpin's series without prometheus_client's ``_created`` twins,
and the process's and platform's series, all from kitpin's own registry."""

from __future__ import annotations

import prometheus_client

from controller.metrics import Metrics


def _names(text: str) -> set[str]:
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_no_created_series() -> None:
    m = Metrics()
    m.count_registry_request("reg.example.com", "manifest")
    m.observe_admission("mutate", "Pinned", 0.01)
    text = m.render().decode()
    assert "kitpin_registry_requests_total" in _names(text)
    assert "kitpin_admission_duration_seconds_bucket" in _names(text)
    assert "_created" not in text
    assert not [n for n in _names(text) if n.endswith("_created")]


def test_process_and_platform_series() -> None:
    names = _names(Metrics().render().decode())
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
    ):
        assert name in names


def test_each_registry_is_its_own() -> None:
    """Two Metrics (tests, several controllers in one process) never collide, and nothing is
    registered in prometheus_client's global default registry."""
    first, second = Metrics(), Metrics()
    first.count_tag_move("watch")
    assert second.value("kitpin_tag_moves_total", {"seen_by": "watch"}) == 0
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "kitpin_" not in default
