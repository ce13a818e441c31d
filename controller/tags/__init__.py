"""ModelKitTag records: what each tag resolved to, who pins which digest, and the drift watch.

``model`` (pure: names, the record, its transitions), ``wire`` (pure: its JSON form),
``writer`` (the admission path's coalescing background writer, with its memo for cached
reviews), ``informer`` (every replica's list-and-watch of the records into the writer),
``lease`` (leader election on a coordination.k8s.io Lease), ``watch`` (the drift watch run by
the leader, and roll-forward), ``follow`` (pure: what a workload that follows its tag becomes),
``settings`` (:class:`TagsSettings`, the metrics Protocol). See docs/tags.md. Imports no kopf.
"""

from controller.tags.model import TagKey, TagRecord, TagStatus, Workload, key_of, object_name
from controller.tags.settings import TagsSettings

__all__ = [
    "TagKey",
    "TagRecord",
    "TagStatus",
    "TagsSettings",
    "Workload",
    "key_of",
    "object_name",
]
