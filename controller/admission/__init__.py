"""Admission: from an AdmissionReview to an answer. Its modules, in the order a review travels:

- ``server``     HTTPS (kopf's webhook server + /healthz /readyz /metrics), body cap, cert
  reload; hands kitpin's own webhooks to the fast path, everything else to kopf;
- ``kopfcompat`` beside it: every kopf internal kitpin uses (error types, the indexes kopf
  binds into its webhook function, the server helpers), checked against kopf 1.45.2;
- ``fastpath``   kitpin's ``/pin-*`` and ``/check-*`` reviews, without kopf's generic machinery;
- ``webhook``    the thin kopf registration (the same handlers kopf runs when the fast path
  declines a review), the indexes and the policy webhook and status;
- ``indexes``    kopf's indexes (namespace labels, parsed policies) → the engine's ``Review``;
- ``decide``     ``Admission``: the engine's decision, with metrics and the audit trail;
- ``pinning``    the engine: what to pin, keep, skip, warn or deny (with ``evidence``: what
  policy judges, and ``pins``: kitpin's annotations), reading :mod:`controller.policy`,
  :mod:`controller.sites` and the resolver through Protocols;
- ``response``   the one answer builder: ``Decision`` → AdmissionReview response, which
  both the fast path and the kopf handlers answer with.

``indexes``, ``decide``, ``fastpath``, ``response`` and ``pinning`` import no kopf.
"""
