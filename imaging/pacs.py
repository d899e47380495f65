"""Findings' DICOM results (``imaging.results``) sent to the hospital's PACS by C-STORE
(pynetdicom), so radiologists see the heat map and the model's figures in their own viewer beside
the image.

Configured by ``CDSS_PACS_URL`` (``dicom://CALLED_AE@host:port``; empty: no PACS, nothing is
sent) and ``CDSS_PACS_CALLING_AE``; ``CDSS_PACS_SEND`` says what goes automatically after each
imaging job (``flagged``: the findings it flagged; ``all``; ``off``, the default: only what a
clinician sends from the viewer); ``CDSS_PACS_OBJECTS`` which objects each finding is: ``sc``
(the default: the Secondary Capture, the picture with the heat map and caption), ``sr`` (the
Structured Report, ``imaging.results_sr``: the result as data, as the IHE AI Results profile asks)
or ``sc,sr``. Sending is a job (``imaging.pacs``, default queue) whose params
hold finding ids only; the objects are made in the worker, sent in one association, and each
answer is kept (``ResultDelivery``). A PACS that cannot be reached, or refuses the association, is
the job's error (retried as any job's); a PACS that refuses an object (a failure status) is that
object's ``refused`` row with its status code, and the others go on.

References: DICOM PS3.4 Annex B (Storage Service Class, C-STORE statuses B.2.3), PS3.7 9.1.1
(C-STORE), PS3.8 (upper layer: association, AE titles of at most 16 characters).
"""

from __future__ import annotations

import io
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from cdss.models import Job

from .models import ENTERED_IN_ERROR, ImagingFinding, ResultDelivery

log = logging.getLogger("cdss.imaging")
# pynetdicom logs associations at INFO and datasets at DEBUG; only its warnings and errors pass.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

PACS_KIND = "imaging.pacs"
SEND_CHOICES = ("off", "flagged", "all")
OBJECT_CHOICES = ("sc", "sr")
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 6.2 AE: 16 characters, no backslash


def valid_ae_title(value: str) -> bool:
    """An AE title (PS3.5 6.2: 1-16 characters of the default repertoire, no backslash, not blank)."""
    return bool(_AE_TITLE.fullmatch(value)) and bool(value.strip())


class PacsConfigError(ValueError):
    pass


@dataclass(frozen=True)
class PacsDestination:
    called_ae: str
    host: str
    port: int
    calling_ae: str

    def __str__(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"


def parse_pacs_url(url: str, calling_ae: str) -> PacsDestination:
    """``dicom://CALLED_AE@host:port``, or ``PacsConfigError`` naming what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme != "dicom":
        raise PacsConfigError("the PACS address must look like dicom://AE_TITLE@host:port")
    called = parts.username or ""
    if not valid_ae_title(called):
        raise PacsConfigError("the PACS address needs the PACS's AE title (1-16 characters) before the @")
    if not valid_ae_title(calling_ae):
        raise PacsConfigError("the calling AE title must be 1-16 characters without a backslash")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise PacsConfigError("the PACS address needs a host and a port (dicom://AE_TITLE@host:port)")
    return PacsDestination(called_ae=called, host=parts.hostname, port=port, calling_ae=calling_ae)


def pacs_destination() -> PacsDestination | None:
    """The configured PACS, or None where there is none."""
    url = str(getattr(settings, "CDSS_PACS_URL", "") or "")
    if not url:
        return None
    return parse_pacs_url(url, str(getattr(settings, "CDSS_PACS_CALLING_AE", "CDSS")))


def pacs_for_pages() -> PacsDestination | None:
    """The configured PACS for a page to offer; None where there is none or its address is wrong
    (the system check ``imaging.E001`` names the problem at start)."""
    try:
        return pacs_destination()
    except PacsConfigError:
        return None


def pacs_checks() -> list[str]:
    """What is wrong with the PACS settings (for the system check), if anything."""
    problems = []
    try:
        pacs_destination()
    except PacsConfigError as exc:
        problems.append(f"CDSS_PACS_URL: {exc}")
    mode = str(getattr(settings, "CDSS_PACS_SEND", "off"))
    if mode not in SEND_CHOICES:
        problems.append(f"CDSS_PACS_SEND must be one of {', '.join(SEND_CHOICES)}")
    try:
        pacs_objects()
    except PacsConfigError as exc:
        problems.append(f"CDSS_PACS_OBJECTS: {exc}")
    try:
        pacs_tls_context()
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"CDSS_PACS_TLS_CA / CDSS_PACS_TLS_CERT / CDSS_PACS_TLS_KEY could not be loaded "
                        f"({type(exc).__name__}: {exc.strerror or exc})")
    return problems


def pacs_objects() -> tuple[str, ...]:
    """The objects each finding is sent as (``CDSS_PACS_OBJECTS``: ``sc``, ``sr`` or both, comma-
    separated), or ``PacsConfigError``."""
    raw = str(getattr(settings, "CDSS_PACS_OBJECTS", "sc") or "")
    chosen = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    if not chosen or any(part not in OBJECT_CHOICES for part in chosen):
        raise PacsConfigError("must be sc (Secondary Capture), sr (Structured Report) or sc,sr")
    return chosen


def pacs_send_enqueue(findings: list[ImagingFinding], *, user: Any = None, reason: str) -> Job | None:
    """Queue the sending of these findings' results (those with a heat map, on images not entered
    in error), in the caller's transaction; None where there is no PACS or nothing to send. One job
    per patient. ``reason`` names why (``viewer``, ``automatic``); a request made again while its
    job waits is that job."""
    from cdss.jobs.runner import job_enqueue

    if pacs_destination() is None:
        return None
    wanted = [f for f in findings if f.heatmap and f.instance.status != ENTERED_IN_ERROR]
    if not wanted:
        return None
    patient_ids = {f.patient_id for f in wanted}
    if len(patient_ids) != 1:
        raise ValueError("one patient's findings per sending")
    ids = sorted(str(f.external_id) for f in wanted)
    # A request made while an earlier one waits (queued, running, failed and due again) is that
    # job; once the patient's sendings have ended (succeeded, or dead after its attempts), a new
    # request is a new job: the finished ones are counted into its inputs.
    finished = Job.objects.filter(kind=PACS_KIND, patient=wanted[0].patient,
                                  status__in=[Job.Status.SUCCEEDED, Job.Status.DEAD]).count()
    return job_enqueue(kind=PACS_KIND, patient=wanted[0].patient, params={"finding_ids": ids}, user=user,
                       inputs={"reason": reason, "after": finished})


@dataclass(frozen=True)
class Answer:
    finding_id: int
    patient_id: int
    object_type: str
    sop_instance_uid: str
    status: str
    detail: str


def _status_text(code: int) -> str:
    from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

    category = code_to_category(code)
    meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))[1]
    return f"0x{code:04X} {category}{': ' + meaning if meaning else ''}"[:200]


def pacs_tls_context() -> ssl.SSLContext | None:
    """The TLS context for the PACS where ``CDSS_PACS_TLS_CA`` names the CA certificates to trust
    it by (its certificate must name the URL's host); with ``CDSS_PACS_TLS_CERT`` and
    ``CDSS_PACS_TLS_KEY`` this system shows its own certificate (a PACS that requires one). None:
    plain TCP. DICOM over TLS: PS3.15 B.9 (TLS 1.2 or later, BCP 195)."""
    ca = str(getattr(settings, "CDSS_PACS_TLS_CA", "") or "")
    if not ca:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert = str(getattr(settings, "CDSS_PACS_TLS_CERT", "") or "")
    if cert:
        context.load_cert_chain(cert, str(getattr(settings, "CDSS_PACS_TLS_KEY", "") or "") or None)
    return context


def _associate(destination: PacsDestination, *sop_classes: str) -> Any:
    """An association with the PACS for these SOP classes (the settings' timeouts, TLS where set),
    or ``ConnectionError`` saying whether it could not be reached or refused. A PACS may accept
    some of the classes only (``_accepts``)."""
    from pynetdicom import AE

    ae = AE(ae_title=destination.calling_ae)
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class)
    timeout = float(getattr(settings, "CDSS_PACS_TIMEOUT_SECONDS", 30.0))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    tls = pacs_tls_context()
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.called_ae,
                         tls_args=(tls, destination.host) if tls is not None else None)
    if not assoc.is_established:
        why = "refused the association" if assoc.is_rejected else "could not be reached"
        raise ConnectionError(f"the PACS {destination} {why}")
    _no_delay(assoc)
    return assoc


def _no_delay(assoc: Any) -> None:
    """TCP_NODELAY on the association's socket. pynetdicom's requester leaves Nagle's algorithm on,
    so the last segment of each C-STORE waits for the PACS's delayed ACK (about 40 ms on Linux)
    before the PACS can answer: measured (``bench/dicom_listener.py``), a 38 KiB image took 58 ms a
    C-STORE without, 14 ms with; the 5 KiB reports went at 14 a second without, 35-39 with."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _accepts(assoc: Any, sop_class: str) -> bool:
    return any(c.abstract_syntax == sop_class for c in assoc.accepted_contexts)


def send(job: Job, ctx: Any) -> list[Answer]:
    """The job's handler: the results made and sent one by one in one association; the answers
    for the writer. Findings gone, entered in error or without a heat map since are left out; an
    object of a kind the PACS did not accept at association is a refused answer that says so."""
    from pydicom import dcmread
    from pydicom.uid import EnhancedSRStorage, SecondaryCaptureImageStorage
    from pynetdicom.status import code_to_category

    from .results import ResultUnavailable, finding_report_dicom, finding_result_dicom

    kinds = {"sc": (SecondaryCaptureImageStorage, finding_result_dicom),
             "sr": (EnhancedSRStorage, finding_report_dicom)}
    objects = [(name, *kinds[name]) for name in pacs_objects()]
    destination = pacs_destination()
    if destination is None:
        raise RuntimeError("no PACS is configured (CDSS_PACS_URL)")
    findings = list(ImagingFinding.objects.select_related("model_version", "patient", "instance__series__study")
                    .filter(external_id__in=job.params.get("finding_ids", []))
                    .exclude(instance__status=ENTERED_IN_ERROR).exclude(heatmap="").order_by("pk"))
    if not findings:
        return []
    # each result is made just before it is sent: a job's worth of them (up to 0.9 MB each) is never
    # held in memory at once
    assoc = _associate(destination, *(sop_class for _name, sop_class, _build in objects))
    answers: list[Answer] = []
    try:
        for i, finding in enumerate(findings):
            for name, sop_class, build in objects:
                try:
                    result = build(finding)
                except ResultUnavailable:  # e.g. no report for a PNG upload
                    continue
                answer = partial(Answer, finding_id=finding.pk, patient_id=finding.patient_id, object_type=name,
                                 sop_instance_uid=result.sop_instance_uid)
                if not _accepts(assoc, sop_class):
                    answers.append(answer(status=ResultDelivery.Status.REFUSED,
                                          detail=f"the PACS did not accept {sop_class.name} at association"[:200]))
                    continue
                status = assoc.send_c_store(dcmread(io.BytesIO(result.data)))
                if "Status" not in status:
                    raise ConnectionError(f"the PACS {destination} gave no answer (timed out or aborted)")
                code = int(status.Status)
                ok = code_to_category(code) in ("Success", "Warning")
                answers.append(answer(status=ResultDelivery.Status.SENT if ok else ResultDelivery.Status.REFUSED,
                                      detail=_status_text(code)))
            ctx.progress(int(100 * (i + 1) / len(findings)), f"{i + 1} of {len(findings)} done")
    finally:
        if assoc.is_established:
            assoc.release()
    return answers


def pacs_echo(destination: PacsDestination) -> float:
    """A C-ECHO (Verification, PS3.4 Annex A) to the PACS: the round trip in seconds, or
    ``ConnectionError`` saying what went wrong."""
    import time

    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    started = time.monotonic()
    assoc = _associate(destination, Verification)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        raise ConnectionError(f"the PACS {destination} gave no answer to C-ECHO")
    if int(status.Status) != 0:
        raise ConnectionError(f"the PACS {destination} answered C-ECHO with status 0x{int(status.Status):04X}")
    return time.monotonic() - started


def write(job: Job, answers: list[Answer]) -> dict[str, Any]:
    destination = str(pacs_destination() or "")
    ResultDelivery.objects.bulk_create([
        ResultDelivery(finding_id=a.finding_id, patient_id=a.patient_id, destination=destination,
                       object_type=a.object_type, sop_instance_uid=a.sop_instance_uid, status=a.status, detail=a.detail, job=job)
        for a in answers])
    sent = sum(a.status == ResultDelivery.Status.SENT for a in answers)
    log.info("pacs job %s: %s result(s) sent, %s refused", job.pk, sent, len(answers) - sent)
    return {"sent": sent, "refused": len(answers) - sent, "destination": destination}


def after_imaging_job(job: Job, result: dict[str, Any]) -> None:
    """After an imaging job: queue the sending of its findings, as ``CDSS_PACS_SEND`` says."""
    mode = str(getattr(settings, "CDSS_PACS_SEND", "off"))
    if mode == "off" or pacs_destination() is None:
        return
    findings = ImagingFinding.objects.filter(job=job).exclude(heatmap="").select_related("patient")
    if mode == "flagged":
        findings = findings.filter(positive=True)
    by_patient: dict[int, list[ImagingFinding]] = {}
    for finding in findings:
        by_patient.setdefault(finding.patient_id, []).append(finding)
    with transaction.atomic():
        for rows in by_patient.values():
            pacs_send_enqueue(rows, reason="automatic")
