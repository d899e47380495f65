"""Reads of imaging rows. Callers pass a patient they got from
``patients.selectors.patient_get_for_user`` (the access check is theirs); rows of another patient
are a 404 here, so a guessed id never crosses patients."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.http import Http404

from cdss.models import Job, ModelVersion
from patients.models import Patient
from patients.selectors import patient_list_for_user

from .models import (
    ENTERED_IN_ERROR,
    FindingFeedback,
    ImagingFinding,
    ImagingInstance,
    ImagingSeries,
    ImagingStudy,
    ResultDelivery,
)
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


@dataclass(frozen=True)
class OperatingPoint:
    """How a model's flag performed at its threshold on held-out data: what a flag (or its absence)
    is worth to the reader."""

    split: str
    n: int
    prevalence: float
    sensitivity: float
    specificity: float


def operating_point(mv: ModelVersion, threshold: float) -> OperatingPoint | None:
    """Sensitivity and specificity at ``threshold`` on the test split where the registry has them,
    else validation; None when neither was measured at that threshold (a multi-label model's other
    labels, a threshold changed after registration)."""
    for split in ("test", "validation"):
        figures = mv.split_metrics(split)
        values = [figures.get(k) for k in ("threshold", "sensitivity", "specificity", "n", "prevalence")]
        if not all(isinstance(v, int | float) for v in values):
            continue
        cut, sensitivity, specificity, n, prevalence = (float(v) for v in values)  # type: ignore[arg-type]
        if abs(cut - threshold) <= 5e-4:  # the registry keeps 4 decimals
            return OperatingPoint(split=split, n=int(n), prevalence=prevalence, sensitivity=sensitivity,
                                  specificity=specificity)
    return None


def _findings() -> QuerySet[ImagingFinding]:
    return ImagingFinding.objects.select_related("model_version").order_by("label", "-model_version__trained_at")


def latest_per_label(findings: Iterable[ImagingFinding]) -> list[ImagingFinding]:
    """Of an image's findings in ``_findings()`` order, the newest model version's per label."""
    latest: dict[str, ImagingFinding] = {}
    for finding in findings:
        latest.setdefault(finding.label, finding)
    return list(latest.values())


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


OTHER_IMAGES_LIMIT = 30


@dataclass
class OtherImage:
    """Another image of the patient's, of the same kind, with the latest finding per label."""

    instance: ImagingInstance
    findings: list[ImagingFinding]

    @property
    def study_date(self) -> dt.date | None:
        return self.instance.series.study.study_date


def imaging_other_images(*, instance: ImagingInstance) -> list[OtherImage]:
    """The patient's other images of the same modality (and body part, where both name one), not
    entered in error, the newest study first, at most ``OTHER_IMAGES_LIMIT``: what a reader
    compares an image with, and where a finding's earlier probabilities come from. Two queries."""
    others = (
        ImagingInstance.objects.filter(patient_id=instance.patient_id, modality=instance.modality)
        .exclude(pk=instance.pk).exclude(status=ENTERED_IN_ERROR).exclude(series__study__status=ENTERED_IN_ERROR)
        .select_related("series__study").defer("presets")  # ``technical``: the window's range, for a comparison
        .prefetch_related(Prefetch("findings", queryset=_findings()))
        .order_by(F("series__study__study_date").desc(nulls_last=True), "-created_at", "-pk")
    )
    if instance.body_part:
        others = others.filter(Q(body_part__iexact=instance.body_part) | Q(body_part=""))
    return [OtherImage(instance=other, findings=latest_per_label(other.findings.all()))
            for other in others[:OTHER_IMAGES_LIMIT]]


def imaging_instance_list(*, patient: Patient) -> QuerySet[ImagingInstance]:
    """The patient's images (not entered in error), the newest first, with their study and series
    and their findings (by label, the newest model version first)."""
    return (
        ImagingInstance.objects.filter(patient=patient).exclude(status=ENTERED_IN_ERROR)
        .exclude(series__study__status=ENTERED_IN_ERROR)
        .select_related("series__study").defer("presets", "technical")
        .prefetch_related(Prefetch("findings", queryset=_findings()))
        .order_by("-created_at", "-pk")
    )


def finding_views(findings: list[ImagingFinding], user: Any) -> list[FindingView]:
    """The findings with their verdict counts, the user's own, and their model's measured AUC (one
    query)."""
    views = _with_verdicts(findings, user)
    for view in views:
        view.auc, view.auc_split = model_auc(view.finding.model_version)
    return views


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
    operating_point: OperatingPoint | None = None
    # the same label on the patient's other images of the kind (the viewer's ``attach_history``)
    history: list[tuple[OtherImage, ImagingFinding]] = field(default_factory=list)
    # the latest sendings of its DICOM result and report to the PACS (the viewer's ``attach_deliveries``)
    delivery: ResultDelivery | None = None
    report_delivery: ResultDelivery | None = None


@dataclass
class ModelFindings:
    model_version: ModelVersion
    findings: list[FindingView] = field(default_factory=list)


def _with_verdicts(findings: list[ImagingFinding], user: Any) -> list[FindingView]:
    """Each finding with the user's latest feedback and the counts of everyone's latest verdicts
    (a change of mind is a new row; a user's latest counts): one query."""
    feedback = FindingFeedback.objects.filter(finding__in=findings).order_by("finding_id", "user_id", "-created_at", "-pk")
    latest: dict[tuple[int, int], FindingFeedback] = {}
    for row in feedback:
        latest.setdefault((row.finding_id, row.user_id), row)
    views = {f.pk: FindingView(finding=f, auc=None, auc_split="") for f in findings}
    for (finding_id, user_id), row in latest.items():
        view = views[finding_id]
        if row.verdict == FindingFeedback.Verdict.AGREE:
            view.agree += 1
        else:
            view.disagree += 1
        if user_id == getattr(user, "pk", None):
            view.mine = row
    return [views[f.pk] for f in findings]


def imaging_findings_for_instance(*, instance: ImagingInstance, user: Any) -> list[ModelFindings]:
    """The image's findings grouped by model version (newest first), each with the user's latest
    feedback and the counts of everyone's latest verdicts: two queries."""
    groups: dict[int, ModelFindings] = {}
    for view in finding_views(list(_findings().filter(instance=instance)), user):
        mv = view.finding.model_version
        view.operating_point = operating_point(mv, view.finding.threshold)
        groups.setdefault(mv.pk, ModelFindings(model_version=mv)).findings.append(view)
    return sorted(groups.values(), key=lambda g: g.model_version.trained_at, reverse=True)


def attach_deliveries(views: list[FindingView]) -> None:
    """Each view's latest sendings to the PACS, of its result and of its report (one query)."""
    by_pk = {view.finding.pk: view for view in views}
    for row in ResultDelivery.objects.filter(finding__in=list(by_pk)).order_by("finding_id", "-created_at", "-pk"):
        view = by_pk[row.finding_id]
        if row.object_type == ResultDelivery.ObjectType.STRUCTURED_REPORT:
            view.report_delivery = view.report_delivery or row
        else:
            view.delivery = view.delivery or row


# The review list's choices: flagged findings awaiting the user's verdict, or every flagged one.
REVIEW_SHOWS = {"awaiting": "Awaiting your verdict", "all": "All flagged"}


def imaging_review_list(*, user: Any, show: str = "awaiting") -> QuerySet[ImagingFinding]:
    """Flagged findings on the images of the patients the user may see (their sites and
    break-glass grants), newest first: of each image and label only the finding of the newest
    model version (as the panel shows it), none of an image entered in error; with ``show=
    "awaiting"`` only those the user has given no verdict on."""
    newer = ImagingFinding.objects.filter(instance=OuterRef("instance"), label=OuterRef("label"),
                                          model_version__trained_at__gt=OuterRef("model_version__trained_at"))
    qs = (
        ImagingFinding.objects.filter(positive=True, patient__in=patient_list_for_user(user).order_by().values("pk"))
        .exclude(instance__status=ENTERED_IN_ERROR)
        .exclude(Exists(newer))
        .select_related("patient__site", "instance__series__study", "model_version")
        .defer("instance__presets", "instance__technical", "patient__raw")
        .order_by("-created_at", "-pk")
    )
    if show == "awaiting":
        qs = qs.exclude(Exists(FindingFeedback.objects.filter(finding=OuterRef("pk"), user=user)))
    return qs


@dataclass
class ModelLabelStatistics:
    """One label of one imaging model version in use: how many images it read, how many it
    flagged, and the clinicians' latest verdicts on its flagged and its unflagged findings."""

    model_version: ModelVersion
    label: str
    images: int = 0  # one finding per image, version and label: also its number of findings
    flagged: int = 0
    flagged_agree: int = 0
    flagged_disagree: int = 0
    unflagged_agree: int = 0
    unflagged_disagree: int = 0

    @staticmethod
    def _share(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    @property
    def findings(self) -> int:
        return self.images

    @property
    def flagged_rate(self) -> float | None:
        return self._share(self.flagged, self.images)

    @property
    def flagged_agreement(self) -> float | None:
        """Of the flagged findings with a verdict, the share clinicians agreed with (their view of
        the model's positive predictive value; not a measured one)."""
        return self._share(self.flagged_agree, self.flagged_agree + self.flagged_disagree)

    @property
    def unflagged_agreement(self) -> float | None:
        return self._share(self.unflagged_agree, self.unflagged_agree + self.unflagged_disagree)


def imaging_model_statistics(*, since: dt.datetime | None = None) -> list[ModelLabelStatistics]:
    """Per imaging model version and label, over the findings made since ``since`` (all when None)
    on images not entered in error: three queries, whatever the number of findings. A verdict is
    each clinician's latest on a finding (a change of mind replaces it). By model name, its newest
    version first."""
    findings = ImagingFinding.objects.exclude(instance__status=ENTERED_IN_ERROR)
    if since is not None:
        findings = findings.filter(created_at__gte=since)
    rows: dict[tuple[int, str], ModelLabelStatistics] = {}
    # one finding per image, model version and label (``imgfinding_once_per_model``): the findings
    # of a version and label are its images, counted without a DISTINCT
    counts = list(findings.order_by().values("model_version", "label").annotate(
        n=Count("pk"), flagged=Count("pk", filter=Q(positive=True))))
    versions = ModelVersion.objects.in_bulk({row["model_version"] for row in counts})
    for row in counts:
        rows[(row["model_version"], row["label"])] = ModelLabelStatistics(
            model_version=versions[row["model_version"]], label=row["label"], images=row["n"], flagged=row["flagged"])
    newer = FindingFeedback.objects.filter(finding=OuterRef("finding"), user=OuterRef("user"), pk__gt=OuterRef("pk"))
    verdicts = (FindingFeedback.objects.filter(finding__in=findings.values("pk")).exclude(Exists(newer)).order_by()
                .values("finding__model_version", "finding__label", "finding__positive", "verdict").annotate(n=Count("pk")))
    for verdict in verdicts:
        stats = rows.get((verdict["finding__model_version"], verdict["finding__label"]))
        if stats is None:
            continue
        field_name = ("flagged_" if verdict["finding__positive"] else "unflagged_") + verdict["verdict"]
        setattr(stats, field_name, getattr(stats, field_name) + verdict["n"])
    return sorted(rows.values(), key=lambda r: (r.model_version.name, -r.model_version.trained_at.timestamp(), r.label))
