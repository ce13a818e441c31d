from tests.kubeapi.fakeapi import fake_api  # noqa: F401  (the fixture)
