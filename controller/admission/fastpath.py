"""The fast path: kitpin's own webhooks (``/pin-*``, ``/check-*``) answered without kopf's
generic admission machinery. No kopf here.

No memo, no Body/Diff wrappers, no handler selection, no per-review log line, and above all
no deep copy + whole-object diff to build the JSON patch (that alone cost ~70% of a warm
review). The review, the decision and the answer are the ones the kopf handlers use
(:func:`controller.admission.indexes.review`, :class:`controller.admission.decide.Admission`,
:func:`controller.admission.response.answer`), with the same indexes (kopf's, which the
server passes in), so the answers are the same; tests compare the two paths on the same
reviews.

Anything it does not recognise exactly (another resource, subresource or operation than the
route's, a malformed review) returns None, and kopf serves it as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controller.admission import decide, indexes, response

__all__ = ["FastPath", "Resource", "Route"]

logger = logging.getLogger(__name__)


class Resource(Protocol):
    """What a route admits (``controller.admission.webhook.WebhookResource``): ``version``,
    ``plural`` and ``kind`` are matched when set."""

    @property
    def group(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def plural(self) -> str | None: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def subresource(self) -> str | None: ...
    @property
    def operations(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, kw_only=True)
class Route:
    """The webhook at one URL path (= kopf handler id): mutating (``pin-*``) or validating
    (``check-*``), for one resource."""

    mutating: bool
    resource: Resource

    def matches(self, request: Mapping[str, Any]) -> bool:
        """Whether ``request`` is exactly what this route's kopf handler would be given."""
        res = self.resource
        resource = request.get("resource") or {}
        if resource.get("group", "") != res.group:
            return False
        if res.plural is not None and resource.get("resource") != res.plural:
            return False
        if res.version is not None and resource.get("version") != res.version:
            return False
        if res.kind is not None and (request.get("kind") or {}).get("kind") != res.kind:
            return False
        if (request.get("subResource") or None) != res.subresource:
            return False
        return request.get("operation") in res.operations


class FastPath:
    """Serves the reviews of ``routes`` (by URL path) with ``admission``."""

    def __init__(self, admission: decide.Admission, routes: Mapping[str, Route]) -> None:
        self.admission = admission
        self.routes = dict(routes)

    async def serve(
        self, data: Mapping[str, Any], webhook: str | None, indices: Mapping[str, Any]
    ) -> response.AdmissionReviewResponse | None:
        """The AdmissionReview response, or None to let kopf serve the review."""
        route = self.routes.get(webhook or "")
        request = data.get("request") if isinstance(data, Mapping) else None
        if route is None or not isinstance(request, Mapping) or not route.matches(request):
            return None
        obj = request.get("object")
        old = request.get("oldObject")
        body = obj if obj is not None else old
        if not isinstance(body, Mapping) or request.get("userInfo") is None:
            return None  # kopf answers malformed reviews with its own errors
        review = indexes.review(
            body=body,
            old=old if isinstance(old, Mapping) else None,
            operation=str(request.get("operation") or ""),
            dryrun=bool(request.get("dryRun")),
            indexes=indices,
        )
        uid = request.get("uid", "")
        try:
            if route.mutating:
                decision = await self.admission.mutate(review)
            else:
                decision = await self.admission.validate(review)
        except Exception as e:  # what kopf does with a handler's unexpected error
            logger.exception("webhook %s failed", webhook)
            payload = response.failure(e, uid=uid)
        else:
            payload = response.answer(decision, obj=body, mutating=route.mutating, uid=uid)
        return response.envelope(data, payload)
