"""The real HAProxy (Debian's package) as a managed test process: one HTTPS frontend on
loopback in front of several kitpin replicas, as a Service in front of a Deployment's pods.

    backends = [Backend(name="a", port=8443), Backend(name="b", port=8444)]
    with HAProxy(workdir, frontend=cert_files, ca_file=ca, backends=backends) as lb:
        lb.url                    # https://127.0.0.1:<port>: the webhooks' URL
        lb.wait_for(up=["a", "b"])
        lb.servers()["a"].status  # "UP", "DOWN", ... from the admin socket
        lb.requests()             # every proxied request, from HAProxy's own log

**HTTP mode with TLS re-encryption, not TCP passthrough.** HAProxy terminates the
apiserver's TLS with :attr:`HAProxy.frontend` (a certificate from the same CA as the
replicas'), reads each review as an HTTP request and sends it to a replica over another TLS
connection that it verifies against ``ca_file`` (name ``localhost``). That costs a second
handshake per connection (both sides keep connections alive) and buys what passthrough cannot
do: replaying a review that was *sent* to a replica that then died. In TCP mode HAProxy sees
bytes only; it can retry a refused connection, but a review in flight when its replica is
SIGKILLed dies with the connection, and the apiserver's call fails (``failurePolicy: Fail``
denies the Pod). The settings that make a replica's death invisible to the apiserver:

- ``option http-buffer-request``: HAProxy waits for the whole request (the review is in the
  body) before it connects to a replica. Without it the headers may leave before the body
  has arrived, the request is then not replayable, and when the replica dies on a reused
  connection HAProxy does what HTTP asks of a proxy: it closes the apiserver's connection
  without an answer, and the apiserver (a Go client, which never replays a POST) fails the
  call with ``EOF``. Measured with this harness, 60 freeze-then-SIGKILL cycles under load:
  11 of 11,860 requests lost that way without it, 0 of 12,337 with it;
- ``retry-on conn-failure empty-response junk-response response-timeout 0rtt-rejected``:
  a refused or reset connection, a failed TLS handshake, a connection closed before any
  answer (the replica died mid-review) and no answer within :attr:`Timings.server` are
  retried; an answer with an HTTP status never is;
- ``option redispatch 1`` and ``retries``: every retry goes through the balancer again
  (round robin: normally the other replica; ``retries`` covers an unlucky pick). After a
  connection error HAProxy pauses ``min(timeout connect, 1 s)`` before retrying, so
  ``timeout connect`` is short (:attr:`Timings.connect`; a connect on loopback takes
  microseconds);
- replaying is safe because a review has no effect kitpin cannot repeat: resolving a
  reference again gives the same digest (an audit record may be written twice);
- only requests that fit HAProxy's buffer are replayed: ``tune.bufsize`` is :data:`BUFSIZE`,
  enough for any Pod review (an 8 MiB UPDATE review would be forwarded, not replayable).

Two more consequences of HTTP mode: the apiserver's reviews are balanced one by one, not per
connection (over its long-lived keep-alive connections, TCP mode could send every review to
one replica); and the apiserver's TLS ends at HAProxy, so the replicas see HAProxy as their
caller. With ``client_cert`` HAProxy presents that certificate to them (reviews and health
checks alike), as a replica started with ``--client-ca`` requires; checking the apiserver's own
certificate would then be HAProxy's job (``verify required`` on the frontend, not set here).

Health checks: ``GET /readyz`` over TLS on each replica every :attr:`Timings.check_interval`;
a server is DOWN after :attr:`Timings.fall` failed checks and UP again after
:attr:`Timings.rise` good ones, so a dead replica is out within about half a second; until
then, retries carry the requests that reach it. (Errors seen in traffic could mark a server
down at once, ``observe layer4``; the checks alone keep fewer moving parts.)

HAProxy logs to stdout (its log file, :attr:`HAProxy.log_path`): one line per request in
:data:`LOG_FORMAT` (parsed by :meth:`HAProxy.requests`; ``retries`` counts the retries,
``redispatched`` says a retry went to another server) and the health-check transitions.
The admin socket (:meth:`HAProxy.servers`) answers ``show stat``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness import pki, procs, tools

STARTUP_TIMEOUT = 15.0
"""Seconds for HAProxy to accept connections; it starts in milliseconds."""

BUFSIZE = 256 * 1024
"""``tune.bufsize``: HAProxy replays (L7 retries) only requests that fit one buffer. A Pod's
CREATE review is ~7 KB; 256 KiB covers large pod specs and UPDATE reviews (both objects)."""

SERVER_NAME = "localhost"
"""The name HAProxy sends (SNI) and checks in the replicas' certificates."""

LOG_FORMAT = (
    "%tr request client=%ci:%cp server=%b/%s status=%ST retries=%rc term=%tsc "
    "Tw=%Tw Tc=%Tc Tr=%Tr Ta=%Ta method=%HM path=%HP"
)
"""One line per proxied request: ``%rc`` is the retry count (``+`` in front when the request
was redispatched to another server), ``%tsc`` the termination state (``----`` is clean), the
``T`` fields milliseconds (queue, connect, response, total; -1 when the step never ended)."""

_REQUEST_LINE = re.compile(
    r"^(?P<time>\S+) request client=(?P<client>\S+) "
    r"server=(?P<backend>[^/\s]+)/(?P<server>\S+) status=(?P<status>-?\d+) "
    r"retries=(?P<redispatched>\+?)(?P<retries>\d+) term=(?P<term>\S+) "
    r"Tw=(?P<tw>-?\d+) Tc=(?P<tc>-?\d+) Tr=(?P<tr>-?\d+) Ta=(?P<ta>-?\d+) "
    r"method=(?P<method>\S+) path=(?P<path>\S+)"
)

INSTALL_HINT = (
    "HAProxy is needed for the two-replica e2e test: run `hack/tools.sh haproxy` as root "
    "(installs Debian's package) or `sudo apt-get install -y haproxy`"
)


def binary() -> Path:
    """The ``haproxy`` binary; installed with ``hack/tools.sh haproxy`` (Debian's package,
    when root) if it is missing. Raises :class:`~harness.procs.HarnessError` saying how to get
    it otherwise: a test that needs HAProxy fails, it never skips."""

    def look() -> str | None:
        path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
        return shutil.which("haproxy", path=path)

    found = look()
    if found is None:
        done = subprocess.run(
            ["bash", str(tools.TOOLS_SH), "haproxy"],
            cwd=tools.REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        found = look()
        if found is None:
            raise procs.HarnessError(f"{INSTALL_HINT}\n{done.stderr.strip()}")
    return Path(found)


@dataclass(frozen=True, kw_only=True)
class Backend:
    """One replica: a name (HAProxy's server name) and its HTTPS port on 127.0.0.1."""

    name: str
    port: int


@dataclass(frozen=True, kw_only=True)
class Timings:
    """HAProxy's timeouts and health-check pace, in seconds (milliseconds in the config)."""

    connect: float = 0.25
    """``timeout connect``: a TCP connect on loopback takes microseconds (the kernel answers
    even for a frozen process); also HAProxy's pause before a retry after a connection
    error."""
    server: float = 9.0
    """``timeout server``: no answer from a replica within this is a ``response-timeout``,
    retried on the other replica. Longer than kitpin's own deadline (8 s in the e2e
    settings), so a slow but working review is never cut off and replayed. With the
    webhooks' 10 s timeout a replay rarely finishes in time: this is for a replica that hangs
    without dying; the health checks keep the next reviews away from it."""
    client: float = 60.0
    """``timeout client`` / ``http-keep-alive``: how long an idle apiserver connection stays."""
    check_interval: float = 0.25
    """``inter``: the pace of ``GET /readyz`` on each replica (also ``fastinter``/``downinter``)."""
    check_timeout: float = 1.0
    """``timeout check``: a replica that does not answer its probe within this failed it."""
    fall: int = 2
    """Consecutive failed probes before a replica is DOWN."""
    rise: int = 2
    """Consecutive good probes before a replica is UP again."""
    retries: int = 3
    """``retries``: how many times one request is retried (each on the other replica)."""


def _pem(path: Path, files: pki.CertFiles) -> Path:
    """Certificate and key in one file (mode 0600), as HAProxy's ``crt`` wants them."""
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(files.cert.read_bytes() + files.key.read_bytes())
    return path


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True, kw_only=True)
class ServerStat:
    """One backend server's line of ``show stat``."""

    name: str
    status: str
    """``UP``, ``DOWN``, ``UP 1/2`` (going down), ``DOWN 1/2`` (coming up), ``MAINT``, ..."""
    current: int
    """``scur``: sessions (requests) on it right now."""
    total: int
    """``stot``: sessions it has taken since HAProxy started."""
    retries: int
    """``wretr``: connection retries on it."""
    redispatches: int
    """``wredis``: requests redispatched away from it."""
    check: str
    """``check_status`` of its last probe: ``L7OK`` when ``/readyz`` answered 200."""

    @property
    def up(self) -> bool:
        """UP *and* its last probe passed (HAProxy starts every server UP, before probing)."""
        return self.status == "UP" and self.check == "L7OK"


@dataclass(frozen=True, kw_only=True)
class Request:
    """One proxied request, as HAProxy logged it (:data:`LOG_FORMAT`)."""

    time: str
    """When HAProxy received it (``%tr``: ``06/Dec/2026:01:40:17.832``)."""
    client: str
    """The client's ``ip:port`` (the apiserver's connection)."""
    server: str
    """The server that answered (the last one tried); ``<NOSRV>`` when none did."""
    status: int
    retries: int
    redispatched: bool
    term: str
    """Termination state: ``----`` is a clean end; ``SH``, ``sD``, ... name what broke."""
    total_ms: int
    method: str
    path: str

    @property
    def clean(self) -> bool:
        return self.term.startswith("--")


class HAProxy:
    """A real ``haproxy`` process; use as a context manager or call ``start()``/``stop()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        frontend: pki.CertFiles,
        ca_file: Path,
        backends: Iterable[Backend],
        client_cert: pki.CertFiles | None = None,
        timings: Timings | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.frontend = frontend
        """Certificate and key the apiserver sees (it trusts the webhook's caBundle)."""
        self.ca_file = Path(ca_file)
        """The CA that must have signed every replica's certificate."""
        self.client_cert = client_cert
        """The certificate HAProxy presents to the replicas, if any."""
        self.backends = tuple(backends)
        if not self.backends:
            raise ValueError("HAProxy needs at least one backend")
        self.timings = timings or Timings()
        self.port = 0
        self.config_path = self.workdir / "haproxy.cfg"
        self.socket_path = self.workdir / "admin.sock"
        self.process: procs.Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "haproxy.log"

    # ------------------------------------------------------------------ config

    def config(self) -> str:
        """The HAProxy configuration for the current port, backends and timings; writes the
        certificate files it names (``frontend.pem``, ``client.pem``) into the work dir."""
        t = self.timings
        pem = _pem(self.workdir / "frontend.pem", self.frontend)
        check = (
            f"check inter {_ms(t.check_interval)} fastinter {_ms(t.check_interval)} "
            f"downinter {_ms(t.check_interval)} fall {t.fall} rise {t.rise}"
        )
        tls = (
            f"ssl verify required ca-file {self.ca_file} "
            f"sni str({SERVER_NAME}) verifyhost {SERVER_NAME}"
        )
        if self.client_cert is not None:
            tls += f" crt {_pem(self.workdir / 'client.pem', self.client_cert)}"
        servers = "\n".join(f"    server {b.name} 127.0.0.1:{b.port}" for b in self.backends)
        return f"""\
global
    log stdout format raw local0 info
    stats socket {self.socket_path} mode 600 level admin
    tune.bufsize {BUFSIZE}
    nbthread 1
    maxconn 2000

defaults
    mode http
    log global
    option log-health-checks
    log-format "{LOG_FORMAT}"
    timeout connect {_ms(t.connect)}
    timeout client {_ms(t.client)}
    timeout http-keep-alive {_ms(t.client)}
    timeout server {_ms(t.server)}
    timeout check {_ms(t.check_timeout)}
    retries {t.retries}
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 0rtt-rejected
    option http-buffer-request

frontend webhooks
    bind 127.0.0.1:{self.port} ssl crt {pem} alpn http/1.1
    default_backend kitpin

backend kitpin
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {SERVER_NAME}
    http-check expect status 200
    default-server {tls} {check}
{servers}
"""

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> HAProxy:
        """Write the config, check it (``haproxy -c``), start HAProxy, wait until it serves."""
        exe = binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # a free port may be taken before HAProxy binds it
            self.port = procs.free_port()
            self.config_path.write_text(self.config())
            checked = subprocess.run(
                [str(exe), "-c", "-q", "-f", str(self.config_path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if checked.returncode != 0:
                raise procs.HarnessError(
                    f"haproxy rejected {self.config_path}:\n{checked.stdout}{checked.stderr}"
                )
            self.process = procs.Process(
                "haproxy", [str(exe), "-db", "-f", str(self.config_path)], log_dir=self.workdir
            ).start()
            try:
                procs.wait_until(
                    lambda: not self.process or not self.process.alive() or self._accepts(),
                    timeout=STARTUP_TIMEOUT,
                    what=f"haproxy accepting on 127.0.0.1:{self.port}",
                )
                self.process.check_alive()
                return self
            except procs.HarnessError:
                self.process.stop()
                if attempt == 2 or "cannot bind" not in self.log_tail(50).lower():
                    raise
        raise AssertionError("unreachable")

    def _accepts(self) -> bool:
        """HAProxy answers on its admin socket, which it opens after binding the frontend
        (a bare TCP probe of the frontend would log a failed TLS handshake)."""
        try:
            return "Uptime_sec" in self.command("show info")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def check_alive(self) -> None:
        if self.process is None:
            raise procs.HarnessError("haproxy was not started")
        self.process.check_alive()

    # ------------------------------------------------------------------ state

    def command(self, line: str) -> str:
        """One command on the admin socket (``show stat``, ``show info``, ...): its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, ServerStat]:
        """The backend's servers by name, from ``show stat``."""
        text = self.command("show stat").lstrip("# ")
        out: dict[str, ServerStat] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") != "kitpin" or row.get("svname") in ("FRONTEND", "BACKEND"):
                continue
            out[row["svname"]] = ServerStat(
                name=row["svname"],
                status=row["status"],
                current=int(row["scur"] or 0),
                total=int(row["stot"] or 0),
                retries=int(row["wretr"] or 0),
                redispatches=int(row["wredis"] or 0),
                check=row["check_status"].lstrip("* "),
            )
        return out

    def wait_for(
        self,
        *,
        up: Sequence[str] = (),
        down: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> None:
        """Poll ``show stat`` until every server in ``up`` is UP and every one in ``down`` is
        DOWN; raise with the states and the log tail after ``timeout`` seconds."""

        def reached() -> bool:
            stats = self.servers()
            return all(stats[n].up for n in up) and all(
                stats[n].status.startswith("DOWN") for n in down
            )

        procs.wait_until(
            reached,
            timeout=timeout,
            what=f"haproxy servers up={sorted(up)} down={sorted(down)}",
            interval=0.05,
            on_timeout=self.diagnostics,
        )

    def requests(self) -> list[Request]:
        """Every proxied request HAProxy has logged so far (health checks are not requests)."""
        out = []
        for line in self.log_lines():
            if m := _REQUEST_LINE.search(line):
                out.append(
                    Request(
                        time=m["time"],
                        client=m["client"],
                        server=m["server"],
                        status=int(m["status"]),
                        retries=int(m["retries"]),
                        redispatched=bool(m["redispatched"]),
                        term=m["term"],
                        total_ms=int(m["ta"]),
                        method=m["method"],
                        path=m["path"],
                    )
                )
        return out

    def events(self) -> list[str]:
        """HAProxy's other log lines: health-check results, servers going DOWN and UP."""
        return [
            line
            for line in self.log_lines()
            # "[WARNING] (pid) : ..." lines are HAProxy's stderr copies of the same messages
            if not _REQUEST_LINE.search(line) and not line.startswith(("$ ", "["))
        ]

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 60) -> str:
        if self.process is None:
            return "--- haproxy: not started ---"
        return self.process.log_tail(lines)

    def diagnostics(self) -> str:
        try:
            states = ", ".join(f"{s.name}={s.status}" for s in self.servers().values())
        except OSError as e:
            states = f"(admin socket: {e})"
        return f"haproxy servers: {states}\n{self.log_tail()}"


def stats_by_server(requests: Iterable[Request]) -> Mapping[str, int]:
    """How many of ``requests`` each server answered."""
    counts: dict[str, int] = {}
    for r in requests:
        counts[r.server] = counts.get(r.server, 0) + 1
    return counts
