"""Reads of imaging rows. Callers pass a patient they got from
``patients.selectors.patient_get_for_user`` (the access check is theirs); rows of another patient
are a 404 here, so a guessed id never crosses patients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Prefetch, QuerySet
from django.http import Http404

from cdss.models import Job, ModelVersion
from patients.models import Patient

from .models import ENTERED_IN_ERROR, FindingFeedback, ImagingFinding, ImagingInstance, ImagingSeries, ImagingStudy
from .pixels import sniff


def model_auc(mv: ModelVersion) -> tuple[float | None, str]:
    """(AUC, the split it was measured on): the held-out test split where the registry has it,
    else validation; never the training split."""
    metrics = mv.metrics if isinstance(mv.metrics, dict) else {}
    for key, split in (("test_auc", "test"), ("validation_auc", "validation"), ("val_auc", "validation")):
        value = metrics.get(key)
        if isinstance(value, int | float):
            return float(value), split
    for split in ("test", "validation"):
        value = mv.split_metrics(split).get("auc")
        if isinstance(value, int | float):
            return float(value), split
    return None, ""


def _findings() -> QuerySet[ImagingFinding]:
    return ImagingFinding.objects.select_related("model_version").order_by("label", "-model_version__trained_at")


def imaging_study_list(*, patient: Patient) -> list[ImagingStudy]:
    """The patient's studies with their series, images and findings: four queries, whatever the
    number of images."""
    instances = ImagingInstance.objects.exclude(status=ENTERED_IN_ERROR).defer("presets", "technical").prefetch_related(
        Prefetch("findings", queryset=_findings())
    )
    series = ImagingSeries.objects.order_by("series_number", "created_at").prefetch_related(
        Prefetch("instances", queryset=instances.order_by("instance_number", "created_at"))
    )
    return list(
        ImagingStudy.objects.filter(patient=patient).exclude(status=ENTERED_IN_ERROR)
        .order_by("-study_date", "-created_at").prefetch_related(Prefetch("series", queryset=series))
    )


def active_imaging_models() -> set[str]:
    """Registry names of the imaging models that have an active version."""
    return set(ModelVersion.objects.filter(kind=ModelVersion.Kind.IMAGING, active=True).values_list("name", flat=True))


def imaging_jobs_pending(*, patient: Patient) -> bool:
    return Job.objects.filter(patient=patient, kind="imaging",
                              status__in=[Job.Status.QUEUED, Job.Status.RUNNING, Job.Status.FAILED]).exists()


def imaging_instance_get(*, patient: Patient, external_id: Any) -> ImagingInstance:
    try:
        return ImagingInstance.objects.select_related("series__study").exclude(status=ENTERED_IN_ERROR).get(
            patient=patient, external_id=external_id)
    except (ImagingInstance.DoesNotExist, ValueError):
        raise Http404("No such image.") from None


def imaging_finding_get(*, patient: Patient, external_id: Any) -> ImagingFinding:
    try:
        return ImagingFinding.objects.select_related("model_version", "instance").get(
            patient=patient, external_id=external_id)
    except (ImagingFinding.DoesNotExist, ValueError):
        raise Http404("No such finding.") from None


def heatmap_png(finding: ImagingFinding) -> bytes:
    """The finding's heat map PNG from storage: its file, or its place in a heat map pack. A file
    that is gone raises FileNotFoundError; a place that does not hold a PNG (a pack cut short or
    replaced) raises ValueError, so a wrong image is never shown as this finding's."""
    name = str(finding.heatmap.name)
    with default_storage.open(name, "rb") as fh:
        if finding.heatmap_offset is None:
            return bytes(fh.read())
        data = _read_span(fh, finding.heatmap_offset, finding.heatmap_length or 0)
    if len(data) != finding.heatmap_length or sniff(data) != "png":
        raise ValueError("the heat map's place in its pack holds no PNG")
    return data


def _read_span(fh: Any, offset: int, length: int) -> bytes:
    """``length`` bytes of an open stored file from ``offset``. An object store's file
    (django-storages' S3 file, whose ``obj`` is the boto3 object) is read with one ranged GET: its
    seek and read would fetch the whole pack first."""
    if length < 1:
        return b""
    obj = getattr(fh, "obj", None)
    if obj is not None and callable(getattr(obj, "get", None)):
        try:
            return bytes(obj.get(Range=f"bytes={offset}-{offset + length - 1}")["Body"].read())
        except Exception as exc:  # the store's own error (a range past the object's end: 416)
            raise OSError(f"the object store refused the range ({type(exc).__name__})") from exc
    fh.seek(offset)
    return bytes(fh.read(length))


@dataclass
class FindingView:
    finding: ImagingFinding
    auc: float | None
    auc_split: str
    mine: FindingFeedback | None = None
    agree: int = 0
    disagree: int = 0


@dataclass
class ModelFindings:
    model_version: ModelVersion
    findings: list[FindingView] = field(default_factory=list)


def imaging_findings_for_instance(*, instance: ImagingInstance, user: Any) -> list[ModelFindings]:
    """The image's findings grouped by model version (newest first), each with the user's latest
    feedback and the counts of everyone's latest verdicts: two queries."""
    findings = list(_findings().filter(instance=instance))
    feedback = FindingFeedback.objects.filter(finding__in=findings).order_by("finding_id", "user_id", "-created_at")
    latest: dict[tuple[int, int], FindingFeedback] = {}
    for row in feedback:
        latest.setdefault((row.finding_id, row.user_id), row)
    groups: dict[int, ModelFindings] = {}
    for finding in findings:
        mv = finding.model_version
        auc, split = model_auc(mv)
        view = FindingView(finding=finding, auc=auc, auc_split=split)
        for (finding_id, user_id), row in latest.items():
            if finding_id != finding.pk:
                continue
            if row.verdict == FindingFeedback.Verdict.AGREE:
                view.agree += 1
            else:
                view.disagree += 1
            if user_id == getattr(user, "pk", None):
                view.mine = row
        groups.setdefault(mv.pk, ModelFindings(model_version=mv)).findings.append(view)
    return sorted(groups.values(), key=lambda g: g.model_version.trained_at, reverse=True)
