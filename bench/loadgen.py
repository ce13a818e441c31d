"""Drive any AdmissionReview webhook with a stream of real reviews over TLS.

    python -m bench.loadgen --target https://127.0.0.1:8443/pin-pods --review review.json \\
        --max --duration 10 --connections 16
    python -m bench.loadgen --target URL --review reviews.jsonl --rate 500 --cacert ca.pem

``--review`` is an AdmissionReview JSON file, or a JSON-lines file of several (repeat the flag
to add more); requests cycle through them in order. The same files drive kitpin, the no-op
baseline (``bench/noop.py``) or any other implementation, so results compare like for like.

Two modes, two generators (see :mod:`bench.tools`):

``--max``         closed loop, ``--connections`` keep-alive connections each with one request
                  in flight, as fast as the webhook answers: wrk (C/LuaJIT, one thread).
``--rate N``      open loop, N requests/s whatever the latency (no coordinated omission):
                  vegeta. ``--connections`` is the initial worker count; vegeta adds workers
                  when all are busy, so a slow answer never delays the next request.

A response counts as an error unless it is HTTP 200 whose body says ``"allowed": true`` (and
contains ``--expect`` when given, e.g. ``patch`` for a review that must be mutated); transport
errors and timeouts count too. Latencies are wrk's or vegeta's own per-request measurements.
Run the generator on another core than the webhook (``--cpu``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench import tools

PERCENTILES: tuple[float, ...] = (
    0,
    1,
    5,
    10,
    20,
    30,
    40,
    50,
    60,
    70,
    75,
    80,
    85,
    90,
    95,
    97.5,
    99,
    99.5,
    99.9,
    99.99,
    100,
)
"""The latency distribution every run reports (0 = min, 100 = max)."""

_ALLOWED = re.compile(rb'"allowed"\s*:\s*true')


@dataclass(kw_only=True)
class Result:
    tool: str
    mode: str  # "max" or "rate"
    target: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    errors: int
    rate: int | None = None
    reviews: int = 1
    error_detail: dict[str, int] = field(default_factory=dict)
    percentiles_ms: dict[str, float] = field(default_factory=dict)
    """Latency at each of :data:`PERCENTILES`, keys as text (``"99.9"``)."""
    server_cpu_us_per_review: float | None = None
    """Filled in by callers that can see the server's CPU time (bench.run)."""
    gc: dict[str, float] | None = None
    """The server's garbage-collector work during the run, when it exposes it (bench.run)."""

    def pct(self, p: float) -> float:
        return self.percentiles_ms[_key(p)]

    def summary(self) -> dict[str, float | int]:
        """The per-case fields of ``latest.json``."""
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 3),
            "p90_ms": round(self.pct(90), 3),
            "p99_ms": round(self.pct(99), 3),
            "max_ms": round(self.pct(100), 3),
            "errors": self.errors,
        }

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _key(p: float) -> str:
    return f"{p:g}"


def read_reviews(paths: Sequence[str | os.PathLike[str]]) -> list[bytes]:
    """Compact JSON bodies from AdmissionReview files (one JSON document, or JSON lines)."""
    bodies: list[bytes] = []
    for path in paths:
        text = Path(path).read_text()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        for doc in docs:
            if doc.get("kind") != "AdmissionReview" or "request" not in doc:
                raise ValueError(f"{path}: not an AdmissionReview")
            bodies.append(json.dumps(doc, separators=(",", ":")).encode())
    if not bodies:
        raise ValueError("no reviews given")
    return bodies


def _taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


# ----------------------------------------------------------------------------- wrk (max)

_WRK_SCRIPT = r"""
local bodies_path = %(bodies)s
local expect = %(expect)s
local path = %(path)s
local P = {%(percentiles)s}
local reqs = {}
local n = 0
local idx = 0
local threads = {}
invalid = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(bodies_path, "rb"))
  for line in f:lines() do
    if #line > 0 then
      n = n + 1
      reqs[n] = wrk.format("POST", path, {["Content-Type"] = "application/json"}, line)
    end
  end
  f:close()
end

function request()
  idx = idx %% n + 1
  return reqs[idx]
end

function response(status, headers, body)
  -- non-2xx statuses are counted by wrk itself (summary.errors.status)
  if status == 200 then
    if not body or not body:find('"allowed"%%s*:%%s*true')
       or (expect and not body:find(expect, 1, true)) then
      invalid = invalid + 1
    end
  end
end

function done(summary, latency, requests)
  local inv = 0
  for _, t in ipairs(threads) do inv = inv + (t:get("invalid") or 0) end
  local e = summary.errors
  local out = {}
  for i, p in ipairs(P) do
    local v
    if p <= 0 then v = latency.min elseif p >= 100 then v = latency.max
    else v = latency:percentile(p) end
    out[#out + 1] = string.format('"%%g":%%d', p, v)
  end
  io.write(string.format(
    '\nWRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"invalid":%%d,"percentiles_us":{%%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    inv, table.concat(out, ",")))
end
"""


def _lua_string(value: str | None) -> str:
    if value is None:
        return "nil"
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_wrk(
    target: str,
    bodies: Sequence[bytes],
    *,
    duration: float,
    connections: int,
    cpu: int | None = None,
    expect: str | None = None,
    timeout: float = 10.0,
) -> Result:
    """Closed-loop max throughput with wrk (one thread, ``connections`` connections)."""
    wrk = tools.wrk()
    url = urlsplit(target)
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    with tempfile.TemporaryDirectory(prefix="kitpin-wrk-") as work:
        bodies_file = Path(work) / "bodies"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        script = Path(work) / "post.lua"
        script.write_text(
            _WRK_SCRIPT
            % {
                "bodies": _lua_string(str(bodies_file)),
                "expect": _lua_string(expect),
                "path": _lua_string(path),
                "percentiles": ",".join(f"{p:g}" for p in PERCENTILES),
            }
        )
        argv = [
            *_taskset(cpu),
            str(wrk),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={max(1, round(timeout))}s",
            "-s",
            str(script),
            target,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {proc.stderr}{proc.stdout}")
    data = json.loads(line.removeprefix("WRKJSON "))
    detail = {k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout", "invalid")}
    seconds = data["duration_us"] / 1e6
    return Result(
        tool=tools.wrk_version(wrk),
        mode="max",
        target=target,
        connections=connections,
        duration_s=round(seconds, 3),
        requests=int(data["requests"]),
        rps=data["requests"] / seconds if seconds else 0.0,
        errors=sum(detail.values()),
        reviews=len(bodies),
        error_detail={k: v for k, v in detail.items() if v},
        percentiles_ms={k: v / 1000 for k, v in data["percentiles_us"].items()},
    )


# ----------------------------------------------------------------------------- vegeta (rate)


def run_vegeta(
    target: str,
    bodies: Sequence[bytes],
    *,
    rate: int,
    duration: float,
    connections: int,
    cpu: int | None = None,
    expect: str | None = None,
    cacert: str | None = None,
    timeout: float = 10.0,
    max_workers: int = 256,
) -> Result:
    """Open-loop fixed rate with vegeta (``rate=0``: closed loop with ``connections``
    workers, for comparing generators). At most ``max_workers`` requests are in flight: a
    server that falls that far behind is saturated, and its latencies say so."""
    vegeta = tools.vegeta()
    with tempfile.TemporaryDirectory(prefix="kitpin-vegeta-") as work:
        targets = Path(work) / "targets.jsonl"
        with open(targets, "w") as f:
            for body in bodies:
                f.write(
                    json.dumps(
                        {
                            "method": "POST",
                            "url": target,
                            "body": base64.b64encode(body).decode(),
                            "header": {"Content-Type": ["application/json"]},
                        }
                    )
                    + "\n"
                )
        out = Path(work) / "results.bin"
        argv = [
            *_taskset(cpu),
            str(vegeta),
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-rate={rate}/1s" if rate else "-rate=0",
            f"-duration={duration:g}s",
            f"-workers={connections}",
            f"-timeout={timeout:g}s",
            "-max-body=65536",
            f"-output={out}",
        ]
        # Open loop, but bounded: a server that cannot keep up would otherwise get one new
        # connection per late request, thousands of them, and the run would measure that.
        argv.append(f"-max-workers={connections if rate == 0 else max_workers}")
        argv.append(f"-root-certs={cacert}" if cacert else "-insecure")
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"vegeta attack failed (exit {proc.returncode}): {proc.stderr}")
        enc = subprocess.run(
            [str(vegeta), "encode", "--to", "json", str(out)],
            capture_output=True,
            check=True,
        )
    latencies: list[float] = []
    detail: dict[str, int] = {}
    first, last = float("inf"), 0.0
    for raw in enc.stdout.splitlines():
        if not raw.strip():
            continue
        r = json.loads(raw)
        lat = r["latency"] / 1e6  # ns -> ms
        latencies.append(lat)
        start = _rfc3339_seconds(r["timestamp"])
        first = min(first, start)
        last = max(last, start + lat / 1000)
        body = base64.b64decode(r.get("body") or "")
        if r.get("error"):
            kind = "timeout" if "timeout" in r["error"].lower() else "transport"
        elif r["code"] != 200:
            kind = "status"
        elif not _ALLOWED.search(body) or (expect and expect.encode() not in body):
            kind = "invalid"
        else:
            continue
        detail[kind] = detail.get(kind, 0) + 1
    if not latencies:
        raise RuntimeError("vegeta recorded no requests")
    span = last - first
    return Result(
        tool=f"vegeta {tools.VEGETA_VERSION}",
        mode="rate" if rate else "max",
        rate=rate or None,
        target=target,
        connections=connections,
        duration_s=round(span, 3),
        requests=len(latencies),
        rps=len(latencies) / span if span > 0 else 0.0,
        errors=sum(detail.values()),
        reviews=len(bodies),
        error_detail=detail,
        percentiles_ms=percentiles(latencies),
    )


def _rfc3339_seconds(text: str) -> float:
    """Seconds since the epoch of vegeta's RFC 3339 timestamps (nanosecond fractions)."""
    from datetime import datetime

    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        raise ValueError(f"unexpected timestamp {text!r}")
    base = datetime.fromisoformat(m[1] + (m[3].replace("Z", "+00:00")))
    return base.timestamp() + (float(m[2]) if m[2] else 0.0)


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    """Nearest-rank percentiles of ``latencies_ms`` at :data:`PERCENTILES`."""
    ordered = sorted(latencies_ms)
    n = len(ordered)
    out: dict[str, float] = {}
    for p in PERCENTILES:
        rank = min(n - 1, max(0, int(-(-p * n // 100)) - 1)) if p > 0 else 0
        out[_key(p)] = ordered[rank]
    return out


# ----------------------------------------------------------------------------- CLI


def run(
    target: str,
    bodies: Sequence[bytes],
    *,
    rate: int | None,
    duration: float,
    connections: int,
    cpu: int | None = None,
    expect: str | None = None,
    cacert: str | None = None,
) -> Result:
    """``rate`` None: max throughput (wrk); else a fixed rate (vegeta)."""
    if rate is None:
        return run_wrk(
            target, bodies, duration=duration, connections=connections, cpu=cpu, expect=expect
        )
    return run_vegeta(
        target,
        bodies,
        rate=rate,
        duration=duration,
        connections=connections,
        cpu=cpu,
        expect=expect,
        cacert=cacert,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--target", required=True, help="webhook URL, e.g. https://127.0.0.1:8443/pin-pods"
    )
    p.add_argument(
        "--review",
        action="append",
        required=True,
        metavar="FILE",
        help="AdmissionReview JSON (or JSON lines); repeatable",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--max", action="store_true", help="max throughput (wrk, closed loop)")
    mode.add_argument("--rate", type=int, help="fixed requests/s (vegeta, open loop)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--connections", type=int, default=16, help="concurrency (default 16)")
    p.add_argument("--cpu", type=int, default=None, help="pin the generator to this CPU")
    p.add_argument("--expect", help="a substring every answer must contain (e.g. patch)")
    p.add_argument("--cacert", help="CA bundle to verify the webhook (vegeta; wrk never verifies)")
    p.add_argument(
        "--tool",
        choices=("auto", "vegeta"),
        default="auto",
        help="auto: wrk for --max, vegeta for --rate; vegeta: vegeta for both",
    )
    args = p.parse_args(argv)
    bodies = read_reviews(args.review)
    started = time.monotonic()
    if args.max and args.tool == "vegeta":
        result = run_vegeta(
            args.target,
            bodies,
            rate=0,
            duration=args.duration,
            connections=args.connections,
            cpu=args.cpu,
            expect=args.expect,
            cacert=args.cacert,
        )
    else:
        result = run(
            args.target,
            bodies,
            rate=None if args.max else args.rate,
            duration=args.duration,
            connections=args.connections,
            cpu=args.cpu,
            expect=args.expect,
            cacert=args.cacert,
        )
    out = result.to_dict()
    out["summary"] = result.summary()
    out["wall_s"] = round(time.monotonic() - started, 2)
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
