from tests.tags.fakeapi import tags_api  # noqa: F401  (the fixture)
