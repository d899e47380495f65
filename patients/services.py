"""Writes to the patient record. Every function here runs in one transaction and audits."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cdss.audit import audit_record

from .fhir.importer import UnitResult, import_unit
from .fhir.parse import Unit, discover_files, unit_from_bytes, units_from_files
from .models import ENTERED_IN_ERROR, ClinicalFact, GenomicResult, Observation, Site


@dataclass
class ImportSummary:
    units: list[UnitResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(u.ok for u in self.units)

    @property
    def failed(self) -> list[UnitResult]:
        return [u for u in self.units if not u.ok]

    def totals(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {}
        for unit in self.units:
            for model, counts in unit.counts.items():
                out.setdefault(model, Counter()).update(counts)
        return out

    def skipped(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for unit in self.units:
            if unit.ok:
                out.update(unit.skipped)
        return out

    @property
    def resources(self) -> int:
        return sum(u.resources for u in self.units if u.ok)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bundles": len(self.units),
            "bundles_failed": len(self.failed),
            "counts": {k: dict(v) for k, v in sorted(self.totals().items())},
            "skipped": dict(sorted(self.skipped().items())),
            "errors": [
                {"source": u.label, "location": e.location, "message": e.message} for u in self.failed for e in u.errors
            ],
        }


def site_get_default() -> Site:
    """The site imports land in when none is named (created on first use)."""
    code = settings.CDSS_DEFAULT_SITE_CODE
    site, _ = Site.objects.get_or_create(code=code, defaults={"name": code.replace("-", " ").title()})
    return site


def fhir_import_units(
    units: Iterable[Unit],
    *,
    site: Site,
    user: Any = None,
    request: Any = None,
    progress: Callable[[UnitResult], None] | None = None,
) -> ImportSummary:
    """Import each unit atomically; a failed unit writes nothing and the others go on."""
    summary = ImportSummary()
    for unit in units:
        result = import_unit(unit, site=site, user=user, request=request)
        summary.units.append(result)
        if progress:
            progress(result)
    return summary


def fhir_import_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    site: Site,
    user: Any = None,
    progress: Callable[[UnitResult], None] | None = None,
) -> ImportSummary:
    files = discover_files(paths)
    return fhir_import_units(units_from_files(files), site=site, user=user, progress=progress)


def fhir_import_bundle(data: bytes, *, site: Site, user: Any = None, request: Any = None,
                       label: str = "request body") -> ImportSummary:
    return fhir_import_units([unit_from_bytes(data, label)], site=site, user=user, request=request)


@transaction.atomic
def clinical_fact_mark_entered_in_error(*, fact: ClinicalFact, user: Any, request: Any = None, reason: str = "") -> None:
    """Clinical facts are never deleted; a mistaken one is marked entered-in-error."""
    fact.status = ENTERED_IN_ERROR
    fact.save(update_fields=["status", "updated_at"])
    if isinstance(fact, Observation):
        # A panel's components and a genomic result read from it share its fate.
        Observation.objects.filter(parent=fact).update(status=ENTERED_IN_ERROR, updated_at=timezone.now())
        GenomicResult.objects.filter(observation=fact).update(status=ENTERED_IN_ERROR, updated_at=timezone.now())
    audit_record(user=user, action="update", target=f"{type(fact).__name__}:entered-in-error",
                 patient=fact.patient, request=request, detail=reason)


# --------------------------------------------------------------------------------------------
# Break-glass: a clinician's emergency access to another site's patient

BREAK_GLASS_MIN_REASON = 10
# Refusals for an unknown MRN a user may collect in an hour before asking is refused outright:
# guessing MRNs is not a way to find another site's patients (each refusal is audited too).
BREAK_GLASS_MAX_REFUSALS_PER_HOUR = 5


class BreakGlassError(ValueError):
    """The access was not granted; the message says why (shown to the clinician who asked)."""


def break_glass_grant(*, user: Any, site: Site, mrn: str, reason: str, request: Any = None) -> tuple[Any, Any]:
    """Open the patient with this MRN at this site to ``user`` for ``CDSS_BREAK_GLASS_HOURS``:
    returns (patient, the new BreakGlassAccess), or (patient, None) when the patient is of one of
    the user's own sites (nothing to grant). A refusal for want of a patient is audited too (outside
    any transaction of this function, so that the refusal's error does not undo it)."""
    from .models import BreakGlassAccess, Patient
    from .selectors import site_list_for_user

    reason = " ".join(reason.split())
    mrn = mrn.strip()
    if len(reason) < BREAK_GLASS_MIN_REASON:
        raise BreakGlassError(f"Say why you need this patient's record (at least {BREAK_GLASS_MIN_REASON} "
                              "characters): the reason is kept and reviewed.")
    if not mrn:
        raise BreakGlassError("Give the patient's MRN.")
    from cdss.models import AuditEvent

    refusals = AuditEvent.objects.filter(user=user, action="break-glass", target="break-glass-refused",
                                         at__gte=timezone.now() - dt.timedelta(hours=1)).count()
    if refusals >= BREAK_GLASS_MAX_REFUSALS_PER_HOUR:
        raise BreakGlassError(f"{refusals} requests for unknown MRNs in the last hour: emergency access is "
                              "refused for now. Ask the privacy office or another clinician.")
    patient = Patient.objects.filter(site=site, mrn=mrn).first()
    if patient is None:
        audit_record(user=user, action="break-glass", target="break-glass-refused", request=request,
                     detail=f"no patient with that MRN at {site.code}")
        raise BreakGlassError(f"No patient with MRN {mrn} at {site.name}.")
    if site_list_for_user(user).filter(pk=site.pk).exists():
        return patient, None
    with transaction.atomic():
        grant = BreakGlassAccess.objects.create(
            user=user, patient=patient, reason=reason[:2000],
            expires_at=timezone.now() + dt.timedelta(hours=float(settings.CDSS_BREAK_GLASS_HOURS)))
        audit_record(user=user, action="break-glass", target="break-glass", patient=patient, request=request,
                     detail=reason[:255])
    return patient, grant
