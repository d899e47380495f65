"""What the DICOM listener takes: images a second received by C-STORE, stored (upload checks,
files, rows, audit) and answered, as a modality or the PACS sends a study, and what sending the
findings' results to a PACS costs.

    python bench/dicom_listener.py [--images 200] [--file CT_small.dcm] [--database-url URL]

A scratch PostgreSQL database (recreated; default cdss_bench_listener), files in a temporary
folder, the listener in this process's threads on a free port, and a pynetdicom Storage SCU
sending copies of a pydicom test file (new UIDs each) over one association; then the same images
sent again (already stored: each answered without storing), a copy of the study for a patient the
record does not have yet (held, then filed by the sweep once the patient exists), and the study's results (Secondary
Captures of fresh heat maps) sent to a Storage SCP in this process. Prints the figures.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import production_django


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sender_nodelay() -> None:
    """pynetdicom's requesting sockets with TCP_NODELAY from here on (this process only)."""
    from pynetdicom import transport

    create = transport.AssociationSocket._create_socket

    def nodelay(self: object, address: object) -> socket.socket:
        sock = create(self, address)  # type: ignore[arg-type]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    transport.AssociationSocket._create_socket = nodelay  # type: ignore[method-assign,assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--file", default="CT_small.dcm", help="a pydicom test file (default CT_small.dcm)")
    parser.add_argument("--nodelay", action="store_true",
                        help="the sender sets TCP_NODELAY (pynetdicom's SCU does not: each C-STORE then waits "
                             "for the receiver's delayed ACK)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/cdss_bench_listener")
    args = parser.parse_args()

    media = tempfile.mkdtemp(prefix="cdss-bench-listener-")
    os.environ["DJANGO_MEDIA_ROOT"] = media
    production_django(args.database_url)
    from django.core.management import call_command
    from django.utils import timezone

    call_command("migrate", verbosity=0)

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import EnhancedSRStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

    from cdss.models import ModelVersion
    from imaging.listener import DicomListener
    from imaging.ml.cpuwork import heatmap_overlay_png
    from imaging.models import ImagingFinding, ImagingInstance
    from imaging.results import finding_report_dicom, finding_result_dicom
    from patients.models import Patient, Site

    site = Site.objects.create(code="bench", name="Bench")
    patient = Patient.objects.create(site=site, mrn="BENCH-1", family_name="Bench", given_names="Listener")
    source = pydicom.dcmread(str(get_testdata_file(args.file)))
    study, series = generate_uid(), generate_uid()
    datasets = []
    for i in range(args.images):
        ds = copy.deepcopy(source)
        ds.PatientID = patient.mrn
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        datasets.append(ds)
    buf = io.BytesIO()
    datasets[0].save_as(buf, enforce_file_format=True)
    size = len(buf.getvalue())

    listener = DicomListener(site=site, ae_title="CDSS", port=free_port())
    server = listener.start()
    sop_class = source.SOPClassUID

    def send_all(sent: list[pydicom.Dataset] | None = None) -> tuple[float, list[int]]:
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(sop_class, source.file_meta.TransferSyntaxUID)
        started = time.perf_counter()
        assoc = ae.associate("127.0.0.1", listener.address[1], ae_title="CDSS")
        statuses = [int(assoc.send_c_store(ds).Status) for ds in (datasets if sent is None else sent)]
        assoc.release()
        return time.perf_counter() - started, statuses

    # the network alone: the same C-STOREs to a Storage SCP that keeps nothing (pynetdicom's own cost)
    bare = AE(ae_title="BARE")
    bare.add_supported_context(sop_class, source.file_meta.TransferSyntaxUID)
    bare_port = free_port()
    bare_server = bare.start_server(("127.0.0.1", bare_port), block=False,
                                    evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    assert bare_server is not None
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(sop_class, source.file_meta.TransferSyntaxUID)
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", bare_port, ae_title="BARE")
    for ds in datasets:
        assoc.send_c_store(ds)
    assoc.release()
    network = time.perf_counter() - started
    bare_server.shutdown()

    if args.nodelay:
        sender_nodelay()
    seconds, statuses = send_all()
    deadline = time.monotonic() + 30
    while not listener.counts.jobs and time.monotonic() < deadline:  # queued as the association ends
        time.sleep(0.05)
    stored = ImagingInstance.objects.count()
    again, statuses_again = send_all()
    # a study for a patient the record does not have yet: held, then filed by the sweep
    late: list[pydicom.Dataset] = []
    late_study, late_series = generate_uid(), generate_uid()
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.PatientID = "BENCH-LATE"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = late_study, late_series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        late.append(ds)
    held_seconds, statuses_held = send_all(late)
    server.shutdown()
    from imaging.held import held_sweep

    Patient.objects.create(site=site, mrn="BENCH-LATE", fhir_id="bench-late", family_name="Bench", given_names="Later")
    started = time.perf_counter()
    filing = held_sweep()
    filed_seconds = time.perf_counter() - started
    print(f"{args.file} ({size / 1024:.0f} KiB each), {args.images} images over one association, 2 cores"
          f"{', the sender with TCP_NODELAY' if args.nodelay else ''} (network alone: without):")
    print(f"  network alone:  {args.images / network:7.1f} images/s ({network * 1000 / args.images:.1f} ms each; "
          f"to a Storage SCP that keeps nothing)")
    print(f"  new images:     {args.images / seconds:7.1f} images/s ({seconds * 1000 / args.images:.1f} ms each; "
          f"{stored} stored, statuses {sorted(set(statuses))}, {listener.counts.jobs} analysis job(s) queued)")
    print(f"  already stored: {args.images / again:7.1f} images/s ({again * 1000 / args.images:.1f} ms each; "
          f"statuses {sorted(set(statuses_again))})")
    print(f"  held (patient not in the record): {args.images / held_seconds:7.1f} images/s "
          f"({held_seconds * 1000 / args.images:.1f} ms each; statuses {sorted(set(statuses_held))})")
    print(f"  filed by the sweep once the patient exists: {filing.filed / filed_seconds:7.1f} images/s "
          f"({filed_seconds * 1000 / max(filing.filed, 1):.1f} ms each; {filing.filed} filed, {filing.jobs} job(s))")

    # The results of the study sent to a PACS (a Storage SCP in this process that keeps nothing).
    mv = ModelVersion.objects.create(name="bench", version="1", kind=ModelVersion.Kind.IMAGING,
                                     architecture="resnet18", dataset="-", split="-", metrics={"test_auc": 0.9},
                                     file_path="-", file_sha256="0" * 64, active=False, trained_at=timezone.now())
    import numpy as np
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    rng = np.random.default_rng(0)
    findings = []
    for instance in ImagingInstance.objects.filter(patient=patient):
        f = ImagingFinding(instance=instance, patient=patient, model_version=mv, label="finding",
                           probability=0.7, threshold=0.5, positive=True)
        png = heatmap_overlay_png(rng.random((8, 8)).astype(np.float32), width=instance.preview_width,
                                  height=instance.preview_height)
        f.heatmap.name = default_storage.save(f"imaging/heatmaps/{f.external_id.hex}.png", ContentFile(png))
        findings.append(f)
    ImagingFinding.objects.bulk_create(findings)
    findings = list(ImagingFinding.objects.select_related("model_version", "patient", "instance__series__study"))
    started = time.perf_counter()
    results = [finding_result_dicom(f) for f in findings]
    made = time.perf_counter() - started
    started = time.perf_counter()
    reports = [finding_report_dicom(f) for f in findings]
    reports_made = time.perf_counter() - started

    received: list[int] = []

    def keep_nothing(event: object) -> int:
        received.append(1)
        return 0x0000

    scp = AE(ae_title="PACS")
    scp.add_supported_context(SecondaryCaptureImageStorage)
    scp.add_supported_context(EnhancedSRStorage)
    port = free_port()
    pacs = scp.start_server(("127.0.0.1", port), block=False,
                            evt_handlers=[(evt.EVT_C_STORE, keep_nothing)])
    assert pacs is not None
    from imaging.pacs import PacsDestination, _associate

    def send_results(assoc: object, objects: list[Any]) -> float:
        started = time.perf_counter()
        for result in objects:
            assoc.send_c_store(pydicom.dcmread(io.BytesIO(result.data)))  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
        return time.perf_counter() - started

    ae = AE(ae_title="CDSS")
    ae.add_requested_context(SecondaryCaptureImageStorage)
    ae.add_requested_context(EnhancedSRStorage)
    destination = PacsDestination("PACS", "127.0.0.1", port, "CDSS")
    plain = send_results(ae.associate("127.0.0.1", port, ae_title="PACS"), results)
    job = send_results(_associate(destination, SecondaryCaptureImageStorage), results)
    plain_reports = send_results(ae.associate("127.0.0.1", port, ae_title="PACS"), reports)
    job_reports = send_results(_associate(destination, EnhancedSRStorage), reports)
    pacs.shutdown()
    kib = sum(len(r.data) for r in results) / len(results) / 1024
    print(f"  results made:   {len(results) / made:7.1f} Secondary Captures/s ({made * 1000 / len(results):.1f} ms each, "
          f"{kib:.0f} KiB each)")
    print(f"  results sent:   {len(results) / job:7.1f} objects/s by C-STORE as the PACS job sends them "
          f"(TCP_NODELAY); {len(results) / plain:.1f}/s by pynetdicom's requester as it is"
          f"{' (here with TCP_NODELAY too)' if args.nodelay else ''}")
    report_kib = sum(len(r.data) for r in reports) / len(reports) / 1024
    print(f"  reports made:   {len(reports) / reports_made:7.1f} Structured Reports/s "
          f"({reports_made * 1000 / len(reports):.1f} ms each, {report_kib:.1f} KiB each)")
    print(f"  reports sent:   {len(reports) / job_reports:7.1f} objects/s as the PACS job sends them (TCP_NODELAY); "
          f"{len(reports) / plain_reports:.1f}/s by pynetdicom's requester as it is"
          f"{' (here with TCP_NODELAY too)' if args.nodelay else ''} ({len(received)} objects received in all)")


if __name__ == "__main__":
    main()
