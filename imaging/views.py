"""Imaging pages: the panel of the patient page (studies, series, thumbnails, findings, upload
form), the viewer of one image (window presets, heat map overlay, the model's figures, feedback)
and the images themselves.

Every view starts with ``patient_get_for_user`` (another site's patient is a 404) and looks the
image up under that patient. The panel, the viewer, every rendered preview and heat map, uploads
and feedback write an audit row; thumbnails do not (the audited panel that lists them already
records the view, and one row per thumbnail would bury the log).

Window presets are rendered on the server, from the stored file, one PNG per request: the file's
full bit depth (12-16 bits) stays on the server and the browser only swaps images. The default
preset's preview is stored at upload and served as it is.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils.functional import cached_property
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cdss.adminkit import PERIODS, period_since
from cdss.audit import audit_record, audit_record_many
from patients.models import Patient
from patients.selectors import patient_get_for_user

from .api import may_upload
from .dicom import ImageFileError
from .imagefile import Preset
from .ml.data import model_names_for
from .models import FindingFeedback, ImagingFinding, ImagingInstance
from .pacs import pacs_for_pages, pacs_send_enqueue
from .pixels import custom_window, load_image, preview_png
from .results import ResultFile, ResultUnavailable, finding_report_dicom, finding_result_dicom, private_file
from .selectors import (
    REVIEW_SHOWS,
    OtherImage,
    active_imaging_models,
    attach_deliveries,
    finding_views,
    heatmap_png,
    imaging_finding_get,
    imaging_findings_for_instance,
    imaging_instance_get,
    imaging_jobs_pending,
    imaging_model_statistics,
    imaging_other_images,
    imaging_review_list,
    imaging_study_list,
    latest_per_label,
)
from .services import ImagingUploadError, UploadFile, finding_feedback_record, imaging_upload

log = logging.getLogger("cdss.imaging")

PANEL_POLL_SECONDS = 3
REVIEW_PAGE_SIZE = 25
REVIEW_COUNT_CAP = 1000  # the review list counts this many at most ("1000+"): a queue, read newest first


class CappedPaginator(Paginator):
    """A paginator that counts at most ``cap`` rows (one ``COUNT`` over ``LIMIT cap + 1``), so a
    list of hundreds of thousands of rows costs what its first thousand do; its pages hold the
    first ``cap`` rows and ``capped`` says there are more."""

    def __init__(self, object_list: Any, per_page: int, *, cap: int) -> None:
        super().__init__(object_list, per_page)
        self.cap = cap

    @cached_property
    def _counted(self) -> int:
        head: Any = self.object_list[: self.cap + 1]  # a queryset: COUNT(*) over LIMIT cap + 1
        return int(head.count())

    @cached_property
    def count(self) -> int:
        return min(self._counted, self.cap)

    @property
    def capped(self) -> bool:
        return self._counted > self.cap


def not_analysed_reason(instance: ImagingInstance, active: set[str], pending: bool) -> str:
    """Why an image shows no finding, in the clinician's words: "No findings" would read as a
    negative result when no model looked at the image."""
    names = model_names_for(instance.modality, instance.body_part)
    if not names:
        kind = " / ".join(v for v in (instance.modality, instance.body_part) if v) or "no modality or body part given"
        return f"Not analysed: no model for this kind of image ({kind})"
    if not active.intersection(names):
        return "Not analysed: the model for this kind of image has no active version"
    if pending:
        return "Analysis pending"
    return "Not analysed yet: run the imaging analysis (Analyses, below)"


def _panel(request: HttpRequest, patient: Patient, **extra: Any) -> HttpResponse:
    studies = imaging_study_list(patient=patient)
    pending = imaging_jobs_pending(patient=patient)
    active: set[str] | None = None  # the imaging models with an active version, read once if needed
    for study in studies:
        for series in study.series.all():
            for instance in series.instances.all():
                # The latest model version's finding per label (findings come ordered by label,
                # newest version first).
                summary = latest_per_label(instance.findings.all())
                instance.finding_summary = summary  # type: ignore[attr-defined]
                if not summary:
                    if active is None:
                        active = active_imaging_models()
                    instance.not_analysed = not_analysed_reason(instance, active, pending)  # type: ignore[attr-defined]
    context = {
        "patient": patient,
        "studies": studies,
        "polling": pending,
        "poll_seconds": PANEL_POLL_SECONDS,
        "may_upload": may_upload(request.user),
        **extra,
    }
    audit_record(user=request.user, action="view", target="imaging-panel", patient=patient, request=request)
    return render(request, "imaging/_imaging_panel.html", context)


@never_cache
@require_GET
@transaction.atomic
def patient_imaging(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    """GET: the imaging panel (a fragment the patient page loads after itself)."""
    patient = patient_get_for_user(request.user, external_id)
    return _panel(request, patient)


@never_cache
@require_POST
def patient_imaging_upload(request: HttpRequest, external_id: uuid.UUID) -> HttpResponse:
    """POST (multipart): store the files, then the panel with what happened."""
    patient = patient_get_for_user(request.user, external_id)
    if not may_upload(request.user):
        return HttpResponse("You may not upload images.", status=403, content_type="text/plain; charset=utf-8")
    files = [UploadFile(f.name or "upload", f.read()) for f in request.FILES.getlist("files")]
    if not files:
        with transaction.atomic():
            return _panel(request, patient, upload_problems=[{"file": "", "message": "choose one or more files"}])
    try:
        with transaction.atomic():
            result = imaging_upload(patient=patient, files=files, user=request.user, request=request,
                                    modality=request.POST.get("modality", "")[:16],
                                    body_part=request.POST.get("body_part", "")[:64])
    except ImagingUploadError as exc:
        with transaction.atomic():
            response = _panel(request, patient, upload_problems=[p.as_dict() for p in exc.problems])
        response.status_code = 200  # HTMX swaps only 2xx answers; the panel names each problem
        return response
    with transaction.atomic():
        return _panel(request, patient, upload_result=result)


@never_cache
@require_GET
@transaction.atomic
def imaging_viewer(request: HttpRequest, external_id: uuid.UUID, instance_id: uuid.UUID) -> HttpResponse:
    patient = patient_get_for_user(request.user, external_id)
    instance = imaging_instance_get(patient=patient, external_id=instance_id)
    groups = imaging_findings_for_instance(instance=instance, user=request.user)
    others = imaging_other_images(instance=instance)
    compare = None
    if wanted_compare := request.GET.get("compare", ""):
        compare = next((o for o in others if str(o.instance.external_id) == wanted_compare), None)
        if compare is None:
            raise Http404("No such image to compare with.")
    attach_history(groups, others)
    pacs = pacs_for_pages()
    if pacs is not None:
        attach_deliveries([view for group in groups for view in group.findings])
    heatmaps = [view.finding for group in groups for view in group.findings if view.finding.heatmap]
    wanted = request.GET.get("finding", "")  # a recommendation's evidence names the finding to show first
    heatmaps.sort(key=lambda f: str(f.external_id) != wanted)  # stable: the others keep their order
    context = {
        "patient": patient,
        "instance": instance,
        "study": instance.series.study,
        "series": instance.series,
        "presets": instance.presets,
        # each preset's window for the window inputs (None for a VOI LUT of the file)
        "preset_windows": [[p.get("center"), p.get("width")] if p.get("kind") == "window" else None
                           for p in instance.presets],
        "value_range": _value_range(instance),
        "groups": groups,
        "others": others,
        "compare": compare,
        # the window set on the image applies to the compared one where both have values to window
        "compare_windowable": bool(compare and _value_range(instance) and _value_range(compare.instance)),
        "heatmaps": heatmaps,
        "pacs": pacs,
        "first_heatmap": heatmaps[0] if heatmaps else None,
        "not_analysed": "" if groups else not_analysed_reason(
            instance, active_imaging_models(), imaging_jobs_pending(patient=patient)),
    }
    audit_record(user=request.user, action="view", target="imaging-viewer", patient=patient, request=request,
                 detail=f"instance {instance.external_id}"
                 + (f" compared with instance {compare.instance.external_id}" if compare else ""))
    return render(request, "imaging/viewer.html", context)


def attach_history(groups: list[Any], others: list[OtherImage]) -> None:
    """To each of the image's findings, the same label's latest finding on each of the patient's
    other images of the kind (``view.history``, the newest study first): how the probability moved
    over the studies."""
    for group in groups:
        for view in group.findings:
            view.history = [(other, finding) for other in others for finding in other.findings
                            if finding.label == view.finding.label]


def _value_range(instance: ImagingInstance) -> tuple[float, float] | None:
    """The range of a grey DICOM image's values after the Modality LUT, recorded at upload (None
    for colour and PNG/JPEG images, and for images stored before it was recorded: no window input)."""
    if not instance.grey_dicom:
        return None
    value = (instance.technical or {}).get("value_range")
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
        return None
    return (float(value[0]), float(value[1]))


def _png(data: bytes) -> HttpResponse:
    return private_file(data, "image/png")


def _stored(name: str) -> bytes:
    with default_storage.open(name, "rb") as fh:
        return bytes(fh.read())


class RenderSources:
    """The stored files the viewer's renderings were last made from, most recent last, up to
    ``CDSS_IMAGING_RENDER_CACHE_BYTES`` in all (a file larger than a quarter of it is not kept):
    a reader scrolling through the frames of one file, or trying windows on it, reads it from
    storage once. Keyed by the file's name and digest (a stored original never changes); one per
    process, its own lock (threads of one process share it; another process keeps its own)."""

    def __init__(self) -> None:
        self._files: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, instance: ImagingInstance) -> bytes:
        limit = int(getattr(settings, "CDSS_IMAGING_RENDER_CACHE_BYTES", 0))
        key = (str(instance.file.name), instance.sha256)
        with self._lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
                return data
        data = _stored(key[0])
        if 0 < len(data) <= limit // 4:
            with self._lock:
                self._files[key] = data
                while sum(len(v) for v in self._files.values()) > limit:
                    self._files.popitem(last=False)
        return data

    def clear(self) -> None:
        with self._lock:
            self._files.clear()


RENDER_SOURCES = RenderSources()


@require_GET
def imaging_thumbnail(request: HttpRequest, external_id: uuid.UUID, instance_id: uuid.UUID) -> HttpResponse:
    patient = patient_get_for_user(request.user, external_id)
    instance = imaging_instance_get(patient=patient, external_id=instance_id)
    return _png(_stored(str(instance.thumbnail.name)))


@dataclass(frozen=True)
class Render:
    """What a preview request asks for: a frame, a preset of the file or a window of the user's
    own, and the preview's size or every pixel."""

    frame: int
    preset: int  # index into the frame's presets (0: the default)
    window: Preset | None  # a window the user set, instead of a preset
    full: bool

    def detail(self) -> str:
        shown = f"window W {self.window.width:g} L {self.window.center:g}" if self.window else f"preset {self.preset}"
        return f"frame {self.frame} {shown}" + (" full size" if self.full else "")


class RenderRequestError(ValueError):
    pass


def _number(raw: str, name: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise RenderRequestError(f"The window {name} must be a number.") from None


def render_request(params: Any, instance: ImagingInstance) -> Render:
    """``?frame=N`` (0-based), ``?preset=N`` or ``?center=C&width=W`` (in the image's values after
    the Modality LUT, e.g. HU), ``?size=full``; ``RenderRequestError`` names a wrong one."""
    raw_frame = params.get("frame", "")
    if raw_frame == "":
        frame = instance.frame_index
    elif raw_frame.isdigit() and int(raw_frame) < instance.frames:
        frame = int(raw_frame)
    else:
        raise RenderRequestError(f"No such frame: the image has {instance.frames} (0 to {instance.frames - 1}).")
    raw_preset = params.get("preset", "")
    if raw_preset and (not raw_preset.isdigit() or int(raw_preset) >= max(len(instance.presets), 1)):
        raise RenderRequestError("No such window preset.")
    center, width = params.get("center", ""), params.get("width", "")
    window = None
    if center or width:
        if not (center and width):
            raise RenderRequestError("A window needs both its center and its width.")
        if raw_preset:
            raise RenderRequestError("Ask for a window preset or a window, not both.")
        if not instance.grey_dicom:
            raise RenderRequestError("This image has no window to set: it is not a grey-scale DICOM image.")
        try:
            window = custom_window(_number(center, "center"), _number(width, "width"))
        except ValueError as exc:
            raise RenderRequestError(f"The window is not valid: {exc}.") from None
    size = params.get("size", "")
    if size not in ("", "preview", "full"):
        raise RenderRequestError("The size must be preview or full.")
    return Render(frame=frame, preset=int(raw_preset or 0), window=window, full=size == "full")


@require_GET
@transaction.atomic
def imaging_preview(request: HttpRequest, external_id: uuid.UUID, instance_id: uuid.UUID) -> HttpResponse:
    """The preview PNG as stored at upload; or, rendered from the stored file, another frame
    (``?frame=N``), window preset (``?preset=N``) or window (``?center=C&width=W``), at the
    preview's size or with every pixel (``?size=full``)."""
    patient = patient_get_for_user(request.user, external_id)
    instance = imaging_instance_get(patient=patient, external_id=instance_id)
    try:
        wanted = render_request(request.GET, instance)
    except RenderRequestError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    if wanted == Render(frame=instance.frame_index, preset=0, window=None, full=False):
        data = _stored(str(instance.preview.name))
    else:
        try:
            loaded = load_image(RENDER_SOURCES.read(instance), frame=wanted.frame,
                                preset=wanted.preset or None, window=wanted.window)
        except ImageFileError as exc:
            return HttpResponse(f"The image could not be rendered: {exc.message}", status=422,
                                content_type="text/plain; charset=utf-8")
        data = preview_png(loaded.rendering, full=wanted.full)
    audit_record(user=request.user, action="view", target="imaging-image", patient=patient, request=request,
                 detail=f"instance {instance.external_id} {wanted.detail()}")
    return _png(data)


@require_GET
@transaction.atomic
def imaging_heatmap(request: HttpRequest, external_id: uuid.UUID, finding_id: uuid.UUID) -> HttpResponse:
    patient = patient_get_for_user(request.user, external_id)
    finding = imaging_finding_get(patient=patient, external_id=finding_id)
    if not finding.heatmap:
        return HttpResponse("This finding has no heat map.", status=404, content_type="text/plain; charset=utf-8")
    try:
        data = heatmap_png(finding)
    except (OSError, ValueError):
        log.error("imaging: the heat map of finding %s could not be read from storage", finding.external_id)
        return HttpResponse("This finding's heat map could not be read from storage.", status=404,
                            content_type="text/plain; charset=utf-8")
    audit_record(user=request.user, action="view", target="imaging-heatmap", patient=patient, request=request,
                 detail=f"finding {finding.external_id}")
    return _png(data)


@require_GET
@transaction.atomic
def imaging_result_dicom(request: HttpRequest, external_id: uuid.UUID, finding_id: uuid.UUID) -> HttpResponse:
    """The finding as a DICOM Secondary Capture (``imaging.results``), to keep or import into a
    PACS by hand; audited as an export."""
    return _finding_dicom(request, external_id, finding_id, finding_result_dicom, "imaging-result")


@require_GET
@transaction.atomic
def imaging_report_dicom(request: HttpRequest, external_id: uuid.UUID, finding_id: uuid.UUID) -> HttpResponse:
    """The finding as a DICOM Structured Report (an Imaging Measurement Report: ``imaging.results_sr``);
    audited as an export."""
    return _finding_dicom(request, external_id, finding_id, finding_report_dicom, "imaging-report")


def _finding_dicom(request: HttpRequest, external_id: uuid.UUID, finding_id: uuid.UUID,
                   build: Callable[[ImagingFinding], ResultFile], target: str) -> HttpResponse:
    patient = patient_get_for_user(request.user, external_id)
    finding = imaging_finding_get(patient=patient, external_id=finding_id)
    try:
        result = build(finding)
    except ResultUnavailable as exc:
        return HttpResponse(str(exc), status=404, content_type="text/plain; charset=utf-8")
    audit_record(user=request.user, action="export", target=target, patient=patient, request=request,
                 detail=f"finding {finding.external_id} as DICOM {result.sop_instance_uid}")
    return private_file(result.data, "application/dicom", result.name)


@never_cache
@require_POST
@transaction.atomic
def imaging_result_send(request: HttpRequest, external_id: uuid.UUID, finding_id: uuid.UUID) -> HttpResponse:
    """Queue the sending of the finding's DICOM result to the PACS (``imaging.pacs``); answers the
    finding's result fragment. Audited as an export."""
    patient = patient_get_for_user(request.user, external_id)
    finding = imaging_finding_get(patient=patient, external_id=finding_id)
    pacs = pacs_for_pages()
    if pacs is None:
        return HttpResponse("No PACS is configured.", status=409, content_type="text/plain; charset=utf-8")
    job = pacs_send_enqueue([finding], user=request.user, reason="viewer")
    if job is None:  # no heat map, or an image entered in error
        return HttpResponse("This finding has no result to send.", status=409, content_type="text/plain; charset=utf-8")
    audit_record(user=request.user, action="export", target="imaging-result-pacs", patient=patient, request=request,
                 detail=f"finding {finding.external_id} queued for the PACS {pacs} (job {job.external_id})")
    [view] = finding_views([finding], request.user)
    attach_deliveries([view])
    return render(request, "imaging/_result.html", {"patient": patient, "instance": finding.instance, "view": view,
                                                    "pacs": pacs, "queued": True})


@never_cache
@require_http_methods(["POST"])
def finding_feedback(request: HttpRequest, external_id: uuid.UUID, finding_id: uuid.UUID) -> HttpResponse:
    """POST ``verdict`` (agree/disagree) and an optional ``comment``; answers the finding's
    feedback fragment."""
    patient = patient_get_for_user(request.user, external_id)
    finding = imaging_finding_get(patient=patient, external_id=finding_id)
    verdict = request.POST.get("verdict", "")
    if verdict not in FindingFeedback.Verdict.values:
        return HttpResponseBadRequest("The verdict must be agree or disagree.", content_type="text/plain; charset=utf-8")
    finding_feedback_record(finding=finding, patient=patient, user=request.user, verdict=verdict,
                            comment=request.POST.get("comment", ""), request=request)
    return _feedback_fragment(request, patient, finding.instance, finding)


def _feedback_fragment(request: HttpRequest, patient: Patient, instance: ImagingInstance,
                       finding: ImagingFinding) -> HttpResponse:
    groups = imaging_findings_for_instance(instance=instance, user=request.user)
    view = next(v for g in groups for v in g.findings if v.finding.pk == finding.pk)
    return render(request, "imaging/_feedback.html", {"patient": patient, "view": view, "saved": True})


@never_cache
@require_GET
@transaction.atomic
def imaging_review(request: HttpRequest) -> HttpResponse:
    """Flagged findings on the images of the user's patients, newest first, for a clinician to read
    and agree or disagree with (``?show=awaiting``, the default: those without the user's verdict;
    ``?show=all``). One audit row per patient shown."""
    show = request.GET.get("show", "")
    if show not in REVIEW_SHOWS:
        show = "awaiting"
    paginator = CappedPaginator(imaging_review_list(user=request.user, show=show), REVIEW_PAGE_SIZE,
                                cap=REVIEW_COUNT_CAP)
    page = paginator.get_page(request.GET.get("page"))
    views = finding_views(list(page.object_list), request.user)
    audit_record_many(user=request.user, action="view", target="imaging-review",
                      patient_ids=[view.finding.patient_id for view in views], request=request, detail=f"show {show}")
    return render(request, "imaging/review.html", {"page": page, "views": views, "show": show, "shows": REVIEW_SHOWS})


@staff_member_required
@never_cache
@require_GET
def imaging_model_statistics_view(request: HttpRequest) -> HttpResponse:
    """Admin page: each imaging model version and label in use, what it read and flagged, and how
    the clinicians' verdicts went (``?days=N``: findings of the last N days). Counts only."""
    if not request.user.has_perm("imaging.view_imagingfinding"):
        raise PermissionDenied("Imaging model statistics need the permission imaging.view_imagingfinding.")
    since, days = period_since(request)
    context = {
        **admin.site.each_context(request), "title": "Imaging models in use", "opts": ImagingFinding._meta,
        "rows": imaging_model_statistics(since=since), "days": days, "period_choices": PERIODS,
    }
    return render(request, "admin/imaging/model_statistics.html", context)
