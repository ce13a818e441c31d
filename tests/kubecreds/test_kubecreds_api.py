"""ApiReader: pull secrets read from the apiserver with two GETs by name, in the object's own
namespace; anything the apiserver refuses is skipped, no answer at all is an error."""

from __future__ import annotations

import base64
import json
import logging

import kopf
import pytest

from controller import kubeapi
from controller.kubecreds import ApiReader, NamespaceCredentials
from tests.kubeapi.fakeapi import FakeApiServer

SA = "/api/v1/namespaces/team-a/serviceaccounts/builder"
SECRET = "/api/v1/namespaces/team-a/secrets/regcred"


def api(server: FakeApiServer) -> kubeapi.KubeAPI[kopf.ConnectionInfo]:
    info = kopf.ConnectionInfo(server=server.server, ca_data=server.ca_pem, token="t0k3n")
    return kubeapi.KubeAPI(info)


def pull_secret(registry: str, user: str) -> dict[str, object]:
    auth = base64.b64encode(f"{user}:pw".encode()).decode()
    config = json.dumps({"auths": {registry: {"auth": auth}}}).encode()
    return {
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }


async def test_reads_a_service_account_and_a_secret_by_name(fake_api: FakeApiServer) -> None:
    fake_api.put(
        SA,
        {
            "kind": "ServiceAccount",
            "imagePullSecrets": [{"name": "regcred"}, {"name": ""}, {}, "junk", {"name": "b"}],
        },
    )
    stored = fake_api.put(SECRET, pull_secret("reg.example", "alice"))
    async with api(fake_api) as client:
        reader = ApiReader(client)
        assert await reader.service_account_pull_secrets("team-a", "builder") == ["regcred", "b"]
        found = await reader.secret("team-a", "regcred")
    assert found is not None
    assert found.type == "kubernetes.io/dockerconfigjson"
    assert list(found.data) == [".dockerconfigjson"]
    assert found.resource_version == stored["metadata"]["resourceVersion"] != ""
    assert [(s.method, s.path) for s in fake_api.seen] == [("GET", SA), ("GET", SECRET)]


async def test_absent_or_forbidden_is_skipped_and_logged(
    fake_api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.forbidden.add(SECRET)
    async with api(fake_api) as client:
        reader = ApiReader(client)
        with caplog.at_level(logging.INFO, logger="controller.kubecreds"):
            assert await reader.service_account_pull_secrets("team-a", "builder") is None
            assert await reader.secret("team-a", "regcred") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("service account team-a/builder not readable" in m and "404" in m for m in messages)
    assert any("pull secret team-a/regcred not readable" in m and "403" in m for m in messages)


async def test_a_name_that_would_leave_the_namespace_is_never_requested(
    fake_api: FakeApiServer,
) -> None:
    async with api(fake_api) as client:
        reader = ApiReader(client)
        assert await reader.secret("team-a", "..") is None
        assert await reader.service_account_pull_secrets("team-a", ".") is None
        assert await reader.secret("team-a", "../../team-b/secrets/regcred") is None
    # Only the last one was sent, as one (encoded) name inside team-a.
    assert [s.path for s in fake_api.seen] == [
        "/api/v1/namespaces/team-a/secrets/..%2F..%2Fteam-b%2Fsecrets%2Fregcred"
    ]


async def test_no_answer_is_an_error_not_a_missing_secret(fake_api: FakeApiServer) -> None:
    fake_api.delay = 0.5
    async with api(fake_api) as client:
        with pytest.raises(kubeapi.UnreachableError):
            await ApiReader(client, timeout=0.05).secret("team-a", "regcred")


async def test_namespace_credentials_over_the_api(fake_api: FakeApiServer) -> None:
    """The whole chain: the pod's secret, then its service account's, cached per TTL."""
    fake_api.put(SECRET, pull_secret("reg.example", "alice"))
    fake_api.put(SA, {"kind": "ServiceAccount", "imagePullSecrets": [{"name": "sa-cred"}]})
    fake_api.put("/api/v1/namespaces/team-a/secrets/sa-cred", pull_secret("other.example", "bob"))
    spec = {"imagePullSecrets": [{"name": "regcred"}], "serviceAccountName": "builder"}
    async with api(fake_api) as client:
        creds = NamespaceCredentials(ApiReader(client))
        a = await creds.lookup(
            namespace="team-a", registry="reg.example", repository="m", pod_spec=spec
        )
        b = await creds.lookup(
            namespace="team-a", registry="other.example", repository="m", pod_spec=spec
        )
        nobody = await creds.lookup(
            namespace="team-b", registry="reg.example", repository="m", pod_spec=spec
        )
    assert a is not None and a.username == "alice"
    assert b is not None and b.username == "bob"
    assert nobody is None  # team-b has no regcred: team-a's is never used
    assert sorted({s.path for s in fake_api.seen}) == [
        "/api/v1/namespaces/team-a/secrets/regcred",
        "/api/v1/namespaces/team-a/secrets/sa-cred",
        SA,
        "/api/v1/namespaces/team-b/secrets/regcred",
        "/api/v1/namespaces/team-b/serviceaccounts/builder",
    ]
    assert {s.method for s in fake_api.seen} == {"GET"}
    assert len(fake_api.seen) == 5  # each read once: the second lookup was served by the cache
