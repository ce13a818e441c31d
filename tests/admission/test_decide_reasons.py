"""One reason code per outcome, and the README's troubleshooting tables list exactly the
reason codes the code defines: a reason added, renamed or dropped in the code without the
README (or the other way round) fails here. The tables are parsed from README.md."""

from __future__ import annotations

import re
from pathlib import Path

from controller import errors, policy, signatures
from controller.admission import pinning
from controller.tags import follow
from controller.tags import model as tags_model

README = Path(__file__).resolve().parents[2] / "README.md"

DENIALS = "reason in the message"
ADMITTED = "reason (admitted)"
EVENTS = "reason (Event)"


def readme_tables() -> dict[str, set[str]]:
    """The reason codes in the first column of each table of the README's troubleshooting
    section whose header starts with "reason", by that header."""
    text = README.read_text()
    section = text.split("\n## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, set[str]] = {}
    header: str | None = None
    for line in section.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        first = line.strip("|").split("|", 1)[0].strip()
        if header is None:
            header = first
            tables[header] = set()
        elif not set(first) <= set("-: "):
            tables[header] |= set(re.findall(r"`([A-Z][A-Za-z]+)`", first))
    return {h: codes for h, codes in tables.items() if h.startswith("reason")}


def constants(cls: type) -> set[str]:
    return {v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


def subclasses(cls: type[errors.KitpinError]) -> list[type[errors.KitpinError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += subclasses(sub)
    return found


def verdict_reasons() -> set[str]:
    """What :attr:`policy.Verdict.reason` can be: allowed, and one per mode."""

    def of(mode: policy.Mode) -> str:
        ref = policy.PolicyRef(kind="ClusterModelKitPolicy", namespace=None, name="p")
        violation = policy.Violation(
            policy=ref, rule="r", reason="x", mode=mode, path="/", where="w", reference="r",
            message="m",
        )  # fmt: skip
        return policy.Verdict(violations=(violation,)).reason

    return {policy.Verdict().reason} | {of(mode) for mode in policy.MODES}


def error_reasons() -> set[str]:
    """Every reason an invalid reference or a registry failure is denied with."""
    return {
        cls.reason for base in (errors.ReferenceError, errors.RegistryError)
        for cls in subclasses(base)
    }  # fmt: skip


def denial_reasons() -> set[str]:
    """Every reason a denial names: reference and registry errors, a non-ModelKit, a policy
    verdict, and a signature check that could not be made (it follows ``failure``)."""
    return error_reasons() | {
        pinning.Reason.NOT_A_MODELKIT,
        policy.Reason.DENIED,
        pinning.Reason.SIGNATURE_UNAVAILABLE,
    }


def test_the_engine_names_reference_errors_by_the_errors_own_reasons() -> None:
    assert pinning.Reason.INVALID_REFERENCE == errors.ReferenceError.reason
    assert pinning.Reason.LOCAL_REFERENCE == errors.LocalReferenceError.reason


def test_signature_reasons_are_the_verifiers_own() -> None:
    """The outcomes of controller.signatures keep their names through policy and the engine:
    missing and invalid signatures are policy violations (Events, every mode), an
    unavailable check is a denial reason (it follows ``failure``)."""
    assert policy.Reason.SIGNATURE_MISSING == signatures.SignatureMissing.reason
    assert policy.Reason.SIGNATURE_INVALID == signatures.SignatureInvalid.reason
    assert pinning.Reason.SIGNATURE_UNAVAILABLE == signatures.SignatureUnavailable.reason
    assert {policy.Reason.SIGNATURE_MISSING, policy.Reason.SIGNATURE_INVALID} <= readme_tables()[
        EVENTS
    ]
    assert {policy.Reason.DENIED} == {r for r in verdict_reasons() if r == "PolicyDenied"}


def test_every_denial_reason_is_in_the_readme_and_nothing_else() -> None:
    assert readme_tables()[DENIALS] == denial_reasons()


def test_every_admission_outcome_is_in_the_readme_and_nothing_else() -> None:
    """The ``outcome`` label of ``kitpin_admission_reviews_total``: every engine reason and
    every verdict reason that is not a denial."""
    outcomes = (constants(pinning.Reason) | verdict_reasons()) - denial_reasons()
    assert readme_tables()[ADMITTED] == outcomes


def test_every_event_reason_is_in_the_readme_and_nothing_else() -> None:
    violations = constants(policy.Reason) - verdict_reasons()
    violations -= {policy.Reason.ACCEPTED, policy.Reason.INVALID}  # status conditions
    drift = {
        tags_model.Reason.TAG_MOVED,
        tags_model.Reason.PINNED_DIGEST_MISSING,
        tags_model.Reason.IMMUTABLE_TAG_MOVED,
        *constants(follow.Reason),
    }
    failure = {pinning.Reason.ADMITTED_UNPINNED, pinning.Reason.ADMITTED_UNVERIFIED}
    assert readme_tables()[EVENTS] == violations | failure | drift


def test_the_tables_are_found() -> None:
    """Guards the parser: the three tables exist and none is empty."""
    tables = readme_tables()
    assert set(tables) == {DENIALS, ADMITTED, EVENTS}
    assert all(tables.values())
