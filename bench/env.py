"""The benchmark's world: the real control plane, a real token-auth registry with real
ModelKits, and kitpin / the no-op responder as real processes pinned to a core.

Everything is a real local process on loopback (the test harness's): kube-apiserver + etcd +
kube-controller-manager, the CNCF distribution registry in token-auth mode with the harness's
token issuer (anonymous pull of ``bench/*``, like a public repository on a hosted registry),
and ModelKits packed and pushed exactly as ``kit pack`` + ``kit push`` write them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import ssl
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from harness import modelkit, procs
from harness.registry import RegistryServer
from harness.tokenissuer import TokenIssuer

REPO_ROOT = Path(__file__).resolve().parents[1]
PUSH_USER = ("bench", "bench-password")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- registry


class Registry:
    """A token-auth distribution registry and its issuer; counts requests at both.

    ``realm_host``: the host the registry names in its token realm (the issuer listens on
    loopback either way). ``localhost`` for a peer whose registry client refuses a realm at a
    loopback IP that is not the registry's own (Kyverno's go-containerregistry, an SSRF guard):
    the issuer's certificate names both."""

    def __init__(self, workdir: Path, *, realm_host: str = "127.0.0.1") -> None:
        self.issuer = TokenIssuer(
            users=dict([PUSH_USER]),
            public=["bench/*"],
            tls=True,  # kitpin refuses a plain-HTTP realm on another host than the registry
            expires_in=3600,
            workdir=workdir / "token-issuer",
        )
        self.server: RegistryServer | None = None
        self.workdir = workdir
        self.realm_host = realm_host

    def start(self) -> Registry:
        self.issuer.start()
        auth = self.issuer.registry_auth()
        auth = dataclasses.replace(auth, realm=f"https://{self.issuer_host}/token")
        self.server = RegistryServer(workdir=self.workdir / "registry", token=auth).start()
        return self

    @property
    def issuer_host(self) -> str:
        """The issuer as the realm names it (``realm_host:port``)."""
        return f"{self.realm_host}:{self.issuer.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.issuer.stop()

    @property
    def host(self) -> str:
        assert self.server is not None
        return self.server.host

    def auth(self) -> modelkit.ChallengeAuth:
        """The pusher's credentials (the issuer serves HTTPS with its own CA)."""
        verify = self.issuer.client_ssl_context()
        return modelkit.ChallengeAuth(*PUSH_USER, token_verify=verify if verify else True)

    def ref(self, repo: str, tag: str) -> str:
        return f"{self.host}/{repo}:{tag}"

    def push(self, repo: str, tag: str, *, seed: int = 0) -> str:
        """``kit pack`` + ``kit push`` of a small ModelKit; its manifest digest."""
        assert self.server is not None
        return modelkit.push_modelkit(
            self.server,
            repo,
            tag,
            kitfile=modelkit.default_kitfile(repo.split("/")[-1]),
            seed=seed,
            auth=self.auth(),
        )

    def tag_many(self, repo: str, existing: str, tags: Sequence[str], *, threads: int = 8) -> str:
        """Point every tag in ``tags`` at ``existing``'s manifest (re-PUT its bytes, as
        ``kit tag`` + ``kit push`` does); the digest."""
        assert self.server is not None
        manifest = modelkit.fetch_manifest(self.server, repo, existing, auth=self.auth())
        local = threading.local()
        clients: list[httpx.Client] = []
        lock = threading.Lock()

        def client() -> httpx.Client:
            c = getattr(local, "client", None)
            if c is None:
                assert self.server is not None
                c = httpx.Client(base_url=self.server.url, auth=self.auth(), timeout=30)
                local.client = c
                with lock:
                    clients.append(c)
            return c

        def put(tag: str) -> str:
            return modelkit.put_manifest(
                client(), repo, tag, manifest, modelkit.MEDIA_TYPE_MANIFEST
            )

        try:
            with ThreadPoolExecutor(threads) as pool:
                digests = set(pool.map(put, tags))
        finally:
            for c in clients:
                c.close()
        assert len(digests) == 1
        return digests.pop()

    def seed_modelkits(self, repo: str, existing: str, tags: Sequence[str]) -> list[str]:
        """Give every tag in ``tags`` its own ModelKit manifest: ``existing``'s, with one more
        annotation (``org.opencontainers.image.ref.name: <tag>``), so every reference has a
        distinct digest and manifest, as 10,000 references in a real cluster would. The
        layers and config are shared (pushed once with ``existing``). Returns the digests.

        The manifests and tags are written into the registry's filesystem storage in
        distribution's layout (``registry/storage/paths.go``: the blob under
        ``blobs/sha256/<2>/<hex>/data``, the repository's revision link, the tag's
        ``current`` and ``index`` links): what a ``kit push`` of each leaves on disk, at a
        small fraction of the cost (a manifest PUT costs the registry ~2.5 ms of CPU, too
        slow for 10,000 in a quick run). Every manifest is then read only through the
        registry's HTTP API; the first and the last are checked here."""
        assert self.server is not None
        root = self.server.workdir / "storage/docker/registry/v2"
        base = json.loads(modelkit.fetch_manifest(self.server, repo, existing, auth=self.auth()))
        repo_dir = root / "repositories" / repo / "_manifests"
        digests: list[str] = []
        for tag in tags:
            doc = dict(base)
            doc["annotations"] = {
                **base.get("annotations", {}),
                "org.opencontainers.image.ref.name": tag,
            }
            data = modelkit.go_json(doc)
            digest = modelkit.sha256_digest(data)
            hexd = digest.removeprefix("sha256:")
            blob = root / "blobs" / "sha256" / hexd[:2] / hexd
            blob.mkdir(parents=True, exist_ok=True)
            (blob / "data").write_bytes(data)
            link = digest.encode()
            for d in (
                repo_dir / "revisions" / "sha256" / hexd,
                repo_dir / "tags" / tag / "index" / "sha256" / hexd,
                repo_dir / "tags" / tag / "current",
            ):
                d.mkdir(parents=True, exist_ok=True)
                (d / "link").write_bytes(link)
            digests.append(digest)
        for i in {0, len(tags) - 1} if tags else ():
            served = modelkit.sha256_digest(
                modelkit.fetch_manifest(self.server, repo, tags[i], auth=self.auth())
            )
            if served != digests[i]:
                raise RuntimeError(f"seeded {repo}:{tags[i]} serves {served}, not {digests[i]}")
        return digests

    def manifest_requests(self, repo: str, *, method: str = "GET") -> dict[str, int]:
        """Manifest requests for ``repo`` in the registry's access log, by status."""
        assert self.server is not None
        pattern = re.compile(rf"/v2/{re.escape(repo)}/manifests/[^/]+")
        counts: collections.Counter[str] = collections.Counter()
        for e in self.server.requests():
            if e.method == method and pattern.fullmatch(e.path):
                counts[str(e.status)] += 1
        return dict(counts)

    def token_requests(self, repo: str) -> int:
        """Token requests at the issuer whose scope names ``repo``."""
        return sum(
            1 for r in self.issuer.requests if any(f"repository:{repo}:" in s for s in r.scopes)
        )

    def kitpin_config(self, path: Path) -> Path:
        """kitpin's ``--registry-config``: plain HTTP to the registry, the issuer's CA."""
        assert self.issuer.ca_file is not None
        doc = {
            "registries": {
                self.host: {"plainHTTP": True},
                self.issuer_host: {"caFile": str(self.issuer.ca_file)},
            }
        }
        path.write_text(json.dumps(doc, indent=2))
        return path


# ----------------------------------------------------------------------------- processes


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def get(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """A GET without certificate checks (probes and /metrics on loopback)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_unverified()) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


class Server:
    """A webhook server process (kitpin or the no-op), pinned to ``cpu``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.process = procs.Process(name, argv, log_dir=workdir / "logs", env=env, cwd=cwd)

    def url(self, path: str = "") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def start(self, *, ready: str = "/healthz", timeout: float = 60.0) -> Server:
        self.process.start()

        def up() -> bool:
            self.process.check_alive()
            try:
                return get(self.url(ready), timeout=2)[0] == 200
            except OSError:
                return False

        procs.wait_until(
            up, timeout=timeout, what=f"{self.name} {ready}", on_timeout=self.process.log_tail
        )
        return self

    def stop(self) -> None:
        self.process.stop()

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def pin(self, cpu: int | None) -> None:
        """Pin every thread of the process to ``cpu`` (None: every CPU again); threads
        started later inherit it. Servers start unpinned, so several start in parallel, and
        are pinned before use."""
        cpus = set(range(os.cpu_count() or 1)) if cpu is None else {cpu}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                os.sched_setaffinity(int(task.name), cpus)
            except ProcessLookupError:
                pass

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{'name{labels}': value}`` (label order as exposed)."""
        status, body = get(self.url("/metrics"))
        if status != 200:
            raise RuntimeError(f"{self.name} /metrics answered {status}")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


def tear_down(
    servers: Sequence[Server],
    *,
    registry: Registry | RegistryServer,
    cp: Any,
    started_cp: Callable[[], object],
    work: Path,
    keep: bool,
) -> None:
    """Stop what a benchmark run started, all of it whatever fails: its servers, the registry,
    the control plane (once its start in the background has ended), and remove ``work``
    unless ``keep``."""
    for s in servers:
        try:
            s.stop()
        except Exception as e:  # keep stopping the rest
            log(f"stopping {s.name}: {e}")
    registry.stop()
    try:
        started_cp()
    except BaseException:
        pass
    cp.stop()
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def metric(samples: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def kitpin(
    name: str,
    *,
    port: int,
    workdir: Path,
    kubeconfig: Path,
    registry_config: Path,
    settings: Mapping[str, Any],
    cpu: int | None,
    dev: bool,
    cert: Any = None,
    src: Path = REPO_ROOT,
    extra_env: Mapping[str, str] | None = None,
) -> Server:
    """``kitpin run`` from ``src`` (the source tree to benchmark). ``dev``: ``--dev`` (its own
    certificates, kopf-managed webhook configurations in the cluster: ``dev-<port>.kitpin.dev``,
    or ``kitpin.dev`` for a tree from before per-instance names); else ``cert`` (devcerts) and
    no webhook configuration."""
    settings_file = workdir / f"{name}-settings.yaml"
    settings_file.write_text(json.dumps(dict(settings)))
    argv = [
        *taskset(cpu),
        sys.executable,
        "-m",
        "controller.cli",
        "run",
        "--port",
        str(port),
        "--settings",
        str(settings_file),
        "--registry-config",
        str(registry_config),
    ]
    if dev:
        argv.append("--dev")
    else:
        argv += [
            "--listen",
            "127.0.0.1",
            "--tls-cert",
            str(cert.cert_file),
            "--tls-key",
            str(cert.key_file),
        ]
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)
    env["KITPIN_DEV_DIR"] = str(workdir / "no-dev-env")  # never pick up a `make dev-up` registry
    env.pop("PYTHONPATH", None)
    env.update(extra_env or {})
    return Server(name, argv, port=port, workdir=workdir, env=env, cwd=src)


def noop(
    name: str, *, port: int, workdir: Path, cert: Any, cpu: int | None, capture: Path | None = None
) -> Server:
    argv = [
        *taskset(cpu),
        sys.executable,
        "-m",
        "bench.noop",
        "--port",
        str(port),
        "--cert",
        str(cert.cert_file),
        "--key",
        str(cert.key_file),
    ]
    if capture is not None:
        argv += ["--capture", str(capture)]
    return Server(name, argv, port=port, workdir=workdir, cwd=REPO_ROOT)


def check_answers(bodies: Iterable[bytes], *, expect: bytes | None = None) -> int:
    """How many answers are not an allowed AdmissionReview (containing ``expect``)."""
    bad = 0
    for body in bodies:
        try:
            response = json.loads(body)["response"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if response.get("allowed") is not True or (expect is not None and expect not in body):
            bad += 1
    return bad


def save(
    results: dict[str, Any],
    target: Path,
    *,
    plot: Callable[[dict[str, Any], Path], object],
    summary: Callable[[dict[str, Any]], None],
) -> None:
    """A benchmark run's end: ``target`` (JSON), its plot next to it (``.png``), the summary."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, target.with_suffix(".png"))
    summary(results)
    print(f"\nwrote {target} and {target.with_suffix('.png')}")
