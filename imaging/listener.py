"""A DICOM Storage SCP (pynetdicom): modalities and the PACS send images to this system by C-STORE,
as they route studies to any other AI node, instead of someone uploading them.

Each image received is stored for the patient of the site whose MRN is its PatientID, through the
same checks as an upload (``imaging.services.images_prepare`` / ``images_store``: a file that cannot
be read, an image stored for another patient, ...), in its own transaction, before the answer is
sent: a success status means the image is stored, and a failure status (with an Error Comment that
names the reason, never a value of the file) means nothing was. The analysis is queued once per
association and patient when the sender releases it (a CT of 300 slices: 5 jobs of 64, not 300);
an association aborted midway queues what was stored by then. An image already stored is a success
(the sender may send a study again).

An image whose PatientID is no MRN of the site is held (``imaging.held``: a success once it is
kept, filed to the patient when the record has one) unless the listener is told to refuse it
(``hold_unmatched=False``: 0xC000, as for every other refusal).

Only callers named in ``allowed_callers`` (AE titles; empty: any) may associate, and they must
call this AE's own title. C-ECHO (Verification) answers, for a PACS administrator's connection
test.

References: DICOM PS3.4 Annex B (Storage Service Class; statuses B.2.3: 0xA700 out of resources,
0xA900 data set does not match SOP class, 0xC000 cannot understand), PS3.7 9.1.1 (C-STORE) and
C.4.2 (Error Comment, 64 characters), PS3.4 Annex A (Verification).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from pydicom.dataset import Dataset

from patients.models import Patient, Site

from . import services
from .receiving import HELD, STORED, dicom_receive
from .services import ImagingUploadError, imaging_jobs_queue

log = logging.getLogger("cdss.imaging")
logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG lines describe datasets

SOURCE = "dicom-listener"
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700


def _failure(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


@dataclass
class ListenerCounts:
    associations: int = 0
    stored: int = 0
    already_stored: int = 0
    held: int = 0
    refused: int = 0
    jobs: int = 0


@dataclass
class _Received:
    """What one association stored, per patient, for the jobs queued at its end, and its counts."""

    by_patient: dict[int, list[int]] = field(default_factory=dict)
    counts: ListenerCounts = field(default_factory=ListenerCounts)


def listener_tls_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext:
    """TLS for the listener (DICOM over TLS, PS3.15 B.9: TLS 1.2 or later): its certificate and
    key; with ``client_ca``, only senders with a certificate signed by those CAs may connect."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key or None)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class DicomListener:
    """The Storage SCP of one site: ``start()`` (in threads, returns the server) or
    ``serve_forever()``; ``counts`` adds up what it did."""

    def __init__(self, *, site: Site, ae_title: str = "CDSS", allowed_callers: list[str] | None = None,
                 host: str = "127.0.0.1", port: int = 11112, max_associations: int = 10,
                 tls: ssl.SSLContext | None = None, hold_unmatched: bool = True) -> None:
        self.site = site
        self.hold_unmatched = hold_unmatched
        self.ae_title = ae_title
        self.allowed_callers = [c.strip() for c in allowed_callers or [] if c.strip()]
        self.address = (host, port)
        self.max_associations = max_associations
        self.tls = tls
        self.counts = ListenerCounts()
        self._received: dict[int, _Received] = {}
        self._lock = threading.Lock()

    def _ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.require_called_aet = True
        if self.allowed_callers:
            ae.require_calling_aet = self.allowed_callers
        ae.maximum_associations = self.max_associations
        return ae

    def _handlers(self) -> list[tuple[Any, Any]]:
        from pynetdicom import evt

        # the end of an association: released, aborted, or its connection gone (whichever comes
        # first queues its jobs; the others find nothing left)
        return [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted),
                (evt.EVT_RELEASED, self._on_end), (evt.EVT_ABORTED, self._on_end), (evt.EVT_CONN_CLOSE, self._on_end)]

    def start(self) -> Any:
        """Listen in background threads; the server (``shutdown()`` stops it)."""
        return self._ae().start_server(self.address, block=False, ssl_context=self.tls, evt_handlers=self._handlers())

    def serve_until_interrupted(self, ready: Callable[[], None] | None = None, *, grace: float = 60.0) -> None:
        """Listen until KeyboardInterrupt (Ctrl+C, or a signal handler raising it); ``ready`` is
        called once the port is open. On the way out the associations under way get up to
        ``grace`` seconds to end (their images stored and their analysis queued) before the rest
        are aborted."""
        server = self.start()
        try:
            if ready is not None:
                ready()
            threading.Event().wait()
        finally:
            deadline = time.monotonic() + grace
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            server.shutdown()

    # -- events (each in the association's thread) ------------------------------------------------

    def _on_accepted(self, event: Any) -> None:
        with self._lock:
            self._received[id(event.assoc)] = _Received()
            self.counts.associations += 1

    def _on_store(self, event: Any) -> Any:
        with self._lock:
            received = self._received.setdefault(id(event.assoc), _Received())
        try:
            status = self._store(event, received)
        except Exception as exc:  # noqa: BLE001 - the sender is told to try again later; nothing is half-stored
            log.error("dicom listener: an image could not be stored (%s)", type(exc).__name__)
            status = _failure(OUT_OF_RESOURCES, "the image could not be stored now; send it again later")
            connections.close_all()  # it may be broken: the next image connects afresh
        if isinstance(status, Dataset):
            self._tally(received, "refused")
        return status

    def _tally(self, received: _Received, name: str) -> None:
        """One more of ``name`` for the association and the listener."""
        with self._lock:
            for counts in (received.counts, self.counts):
                setattr(counts, name, getattr(counts, name) + 1)

    def _store(self, event: Any, received: _Received) -> Any:
        data = event.encoded_dataset(include_meta=True)
        if len(data) > services.MAX_TOTAL_BYTES:  # an upload's limit (CDSS_IMAGING_MAX_UPLOAD_BYTES)
            return _failure(CANNOT_UNDERSTAND, f"larger than {services.MAX_TOTAL_BYTES} bytes, the limit")
        try:
            patient_id = str(event.dataset.get("PatientID") or "").strip()
        except Exception:  # noqa: BLE001 - a data set that cannot be read is refused below
            return _failure(CANNOT_UNDERSTAND, "the data set could not be read")
        if not patient_id:
            return _failure(CANNOT_UNDERSTAND, "no PatientID (0010,0020) to match a patient")
        try:
            receipt = dicom_receive(
                data=data, patient_id=patient_id, sop_instance_uid=str(event.request.AffectedSOPInstanceUID),
                patients=Patient.objects.filter(site=self.site), hold_site=self.site if self.hold_unmatched else None,
                source=SOURCE, calling_ae=str(event.assoc.requestor.ae_title))
        except ImagingUploadError as exc:
            problem = exc.problems[0]
            if problem.code == "no-patient":
                return _failure(CANNOT_UNDERSTAND, f"no patient at site {self.site.code} has this PatientID")
            return _failure(CANNOT_UNDERSTAND, f"{problem.code}: {problem.message}")
        if receipt.instance_id is not None and receipt.patient is not None:
            with self._lock:
                received.by_patient.setdefault(receipt.patient.pk, []).append(receipt.instance_id)
        self._tally(received, {STORED: "stored", HELD: "held"}.get(receipt.outcome, "already_stored"))
        return 0x0000

    def _on_end(self, event: Any) -> None:
        with self._lock:
            received = self._received.pop(id(event.assoc), None)
        if received is None or not (received.by_patient or received.counts.held):
            connections.close_all()
            return
        try:
            jobs = 0
            with transaction.atomic():
                patients = Patient.objects.in_bulk(list(received.by_patient))
                for pk, ids in received.by_patient.items():
                    jobs += len(imaging_jobs_queue(patient=patients[pk], instance_ids=ids))
            with self._lock:
                self.counts.jobs += jobs
            log.info("dicom listener: %s image(s) stored, %s already stored, %s held, %s refused; %s analysis job(s) "
                     "queued", received.counts.stored, received.counts.already_stored, received.counts.held,
                     received.counts.refused, jobs)
        except Exception as exc:  # noqa: BLE001 - the images are stored; the patient page's "Run" analyses them
            log.error("dicom listener: the analysis of %s stored image(s) could not be queued (%s)",
                      sum(len(v) for v in received.by_patient.values()), type(exc).__name__)
        finally:
            # the association's thread (released, aborted) kept one connection for all its images;
            # threads come and go with associations, so it is closed with it
            connections.close_all()
