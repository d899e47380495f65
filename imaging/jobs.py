"""The imaging job kind: findings and Grad-CAM heat maps for a batch of images.

The job's params hold instance ids only (``instance_ids``); a job without them (the patient
page's "Run") reads every image of its patient. For each image the models that apply to its
modality and body part (``imaging.ml.inference.model_names_for``) are looked up; a model with no
active version is recorded in the job's result as "no active model" and skipped. Images a model
version has already read are skipped, and findings are unique per image, model version and
label, so running a job twice writes nothing twice.

The handler reads and predicts (no writes) through ``imaging.ml.pipeline.read_images``: each
image's analysis copy (``imaging.pixels.analysis_copy``, written at upload; the original for images
stored before there was one, or for a model of a larger input: ``_Reader``) is
decoded on a thread pool one batch ahead of the model, each model sees its images in batches of up
to 64 (one forward pass each, which gives the probabilities and the Grad-CAM heat maps), and the
heat map overlay PNGs are encoded on the pool while the next batch runs. A stored file that can no
longer be read is counted in the result (``unreadable``) and the other images go on.

Storing (``HeatmapStore``): the heat map PNGs go into packs, files holding the PNGs of a group of
images one after another (each finding names its pack and its PNG's offset and length), written
by the pipeline's encoders on a local storage folder (one pack per group they encode together),
saved by background threads while the pipeline goes on to any other storage (16 PNGs a pack);
the writer inserts the findings (one INSERT per thousand) with the job's success, in one
transaction. Packs no kept row names are removed: by the handler if it fails, by the writer
where another job read every image of a pack meanwhile, and by the kind's discarder when the
writer's transaction does not commit (``cdss.jobs.registry.JobKind.discard``).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage, storages

from cdss.models import Job

from .ml.cpuwork import Blob, Target, decode_blob
from .ml.store import STORE_THREADS, PackSaves
from .models import ImagingFinding, ImagingInstance
from .pixels import ANALYSIS_MAX_SIDE

if TYPE_CHECKING:
    from .ml.pipeline import ReadOut

log = logging.getLogger("cdss.imaging")

IMAGING_KIND = "imaging"
HEATMAP_FOLDER = "imaging/heatmaps"  # in storage
INSERT_BATCH = 1000  # findings per INSERT


@dataclass
class FindingRow:
    instance_id: int
    patient_id: int
    model_version_id: int
    label: str
    probability: float
    threshold: float
    positive: bool
    external_id: uuid.UUID
    heatmap: str  # the name in storage of the heat map pack holding the PNG ("" for none)
    heatmap_offset: int | None = None  # the PNG's place in the pack
    heatmap_length: int | None = None


class HeatmapStore(PackSaves):
    """Where a job's heat map PNGs go: packs (``heatmap_pack_name``), each holding the PNGs of a few
    images one after another; a finding names its pack and its PNG's offset and length in it.

    On a local storage folder (``_local_folder``) the pipeline's encoders write the packs
    themselves, one per group of images they encode together (``packs``, for
    ``read_images(overlay_packs=)``); to any other storage the PNGs are gathered into packs of
    ``PACK_PNGS`` and saved by background threads (``PackSaves``). ``stored`` gives a finding its
    PNG's place either way. Leaving the block by an exception, or ``discard``, removes every pack
    of both kinds."""

    def __init__(self, threads: int = STORE_THREADS) -> None:
        super().__init__(_save_exact, remove_files, _new_pack_name, threads=threads)
        self.local = _local_folder()
        self.local_packs: list[str] = []  # named for the encoders (written, being written or not)

    def packs(self) -> Callable[[], tuple[str, Target]] | None:
        local = self.local
        if local is None:
            return None

        def new_pack() -> tuple[str, Target]:
            name = _new_pack_name()
            self.local_packs.append(name)
            return name, (local.path(name), local.file_permissions_mode)

        return new_pack

    def stored(self, out: ReadOut[ImagingInstance], label: str) -> tuple[str, int | None, int | None]:
        """The pack holding the overlay of ``label`` and the PNG's offset and length in it (""
        and None for no overlay)."""
        if label in out.written:
            offset, length = out.written[label]
            return out.pack, offset, length
        png = out.overlays.get(label, b"")
        return self.add(png) if png else ("", None, None)

    def discard(self) -> None:
        try:
            super().discard()
        finally:
            remove_files(self.local_packs)
            self.local_packs = []


def _local_folder() -> FileSystemStorage | None:
    """Default storage when it is a folder on this machine: the pipeline's encoders (threads or
    decode processes) then write the heat map files there themselves, as FileSystemStorage would
    (same path, permissions and exclusive creation), so the PNGs never come back to this process.
    Other storages (an object store) get them through ``HeatmapStore``."""
    storage = storages["default"]  # what default_storage stands for
    own_save = getattr(type(storage), "_save", None) is getattr(FileSystemStorage, "_save", None)
    return storage if isinstance(storage, FileSystemStorage) and own_save else None


def heatmap_pack_name(key: uuid.UUID) -> str:
    """The heat map pack named by ``key``, in one of 256 folders (the key's first two hex digits):
    file systems create files in one folder one at a time (the folder's lock), so with one folder
    the encoders writing in parallel would wait on each other (2 processes on the development
    machine: 1,354 files/s in one folder, 2,630 spread), and a folder of millions of files is slow
    to list and back up. (Findings stored before packs name a PNG file of their own,
    ``<id>.png``, in the same folders.)"""
    return f"{HEATMAP_FOLDER}/{key.hex[:2]}/{key.hex}.pack"


def _new_pack_name() -> str:
    return heatmap_pack_name(uuid.uuid4())


def _save_exact(name: str, png: bytes) -> str:
    """Saves under ``name`` or fails: the finding's row will name this file, so a storage that picks
    another name (the name was taken) is an error, and the file it wrote is removed."""
    saved = default_storage.save(name, ContentFile(png))
    if saved != name:
        default_storage.delete(saved)
        raise FileExistsError("a heat map pack of that name already exists in storage")
    return saved


def remove_files(names: list[str], what: str = "heat map") -> None:
    """Removes files from default storage (empty names skipped); one that cannot be removed is
    logged (by count, never by name: a name may be a patient's image's) and the others go on."""
    failed = 0
    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
        except Exception:  # noqa: BLE001 - a leftover file is reported, not fatal
            failed += 1
    if failed:
        log.error("imaging: %s %s file(s) could not be removed from storage", failed, what)


class _Reader:
    """How the job reads an image for a model of input ``input_size``: its analysis copy (the image
    the models read, at most ``ANALYSIS_MAX_SIDE`` a side: ``imaging.pixels.analysis_copy``) where
    there is one and the model's input is no larger, else the original file (its frame rendered as
    the preview was; ``imaging.pixels.model_image``). A copy that cannot be read falls back to the
    original."""

    def __init__(self, input_size: int) -> None:
        self.use_copy = input_size <= ANALYSIS_MAX_SIDE

    def fetch(self, instance: ImagingInstance) -> Blob | None:
        """The file's bytes and the frame to read, for decoding in a worker process; None if the
        image cannot be read any more."""
        if self.use_copy and instance.analysis.name:
            copy = _read(str(instance.analysis.name))
            if copy is not None:
                return copy, None
        original = _read(str(instance.file.name))
        return None if original is None else (original, instance.frame_index)

    def decode(self, instance: ImagingInstance) -> np.ndarray | None:
        """The image the models read; None if it cannot be read any more."""
        return decode_blob(self.fetch(instance))


def _read(name: str) -> bytes | None:
    try:
        with default_storage.open(name, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _overlay_size(instance: ImagingInstance) -> tuple[int, int]:
    return instance.preview_width, instance.preview_height


def _instances(job: Job) -> list[ImagingInstance]:
    ids = [int(i) for i in job.params.get("instance_ids", [])]
    qs = ImagingInstance.objects.filter(status="available")
    if ids:
        qs = qs.filter(pk__in=ids)
    elif job.patient_id is not None:
        qs = qs.filter(patient_id=job.patient_id)
    else:
        return []
    return list(qs.order_by("pk"))


def run(job: Job, ctx: Any) -> dict[str, Any]:
    from .ml.inference import get_loaded_model, model_names_for
    from .ml.pipeline import BATCH, read_images

    instances = _instances(job)
    by_model: dict[str, list[ImagingInstance]] = {}
    no_model: Counter[str] = Counter()
    for instance in instances:
        names = model_names_for(instance.modality, instance.body_part)
        if not names:
            no_model[f"{instance.modality or '?'}/{instance.body_part or '?'}"] += 1
        for name in names:
            by_model.setdefault(name, []).append(instance)
    rows: list[FindingRow] = []
    models: dict[str, str] = {}
    inactive: list[str] = []
    skipped_done = 0
    unreadable = 0
    processes = max(0, int(getattr(settings, "CDSS_IMAGING_PROCESSES", 0)))
    with HeatmapStore() as store:  # an exception below removes every heat map file written so far
        for name, group in sorted(by_model.items()):
            model = get_loaded_model(name)
            if model is None:
                inactive.append(name)
                continue
            models[name] = model.version
            done = set(ImagingFinding.objects.filter(instance__in=group, model_version_id=model.model_version_id)
                       .values_list("instance_id", flat=True))
            todo = [i for i in group if i.pk not in done]
            skipped_done += len(group) - len(todo)
            if not todo:
                continue
            reader = _Reader(model.input_size)
            for out in read_images(model, todo, reader.decode, _overlay_size, batch_size=BATCH, processes=processes,
                                   fetch=reader.fetch, overlay_packs=store.packs()):
                if out.probabilities is None:
                    unreadable += 1
                    continue
                for label in model.labels:
                    pack, offset, length = store.stored(out, label)
                    rows.append(FindingRow(
                        instance_id=out.item.pk, patient_id=out.item.patient_id,
                        model_version_id=model.model_version_id, label=label,
                        probability=out.probabilities[label], threshold=float(model.thresholds[label]),
                        positive=out.positive[label], external_id=uuid.uuid4(), heatmap=pack,
                        heatmap_offset=offset, heatmap_length=length,
                    ))
            ctx.progress(int(100 * (len(models) + len(inactive)) / max(len(by_model), 1)),
                         f"{name}: {len(todo)} image(s)")
        store.names()  # every pack written, or none left and the error raised
    return {
        "rows": rows,
        "summary": {
            "instances": len(instances),
            "models": models,
            "no_active_model": inactive,
            "no_model_for": dict(no_model),
            "already_read": skipped_done,
            "unreadable": unreadable,
        },
    }


def write(job: Job, payload: dict[str, Any]) -> dict[str, Any]:
    """Inserts the findings the handler made (their heat map packs are already in storage), in the
    job's transaction. Rows for an image, model version and label another job stored meanwhile
    are left out, and the packs no kept row names removed."""
    rows: list[FindingRow] = payload["rows"]
    existing = set(ImagingFinding.objects.filter(instance_id__in={r.instance_id for r in rows})
                   .values_list("instance_id", "model_version_id", "label"))
    keep: list[FindingRow] = []
    taken: list[FindingRow] = []
    for row in rows:
        (taken if (row.instance_id, row.model_version_id, row.label) in existing else keep).append(row)
    findings = [
        ImagingFinding(
            external_id=row.external_id, instance_id=row.instance_id, patient_id=row.patient_id,
            model_version_id=row.model_version_id, label=row.label,
            probability=min(max(row.probability, 0.0), 1.0), threshold=row.threshold, positive=row.positive,
            heatmap=row.heatmap, heatmap_offset=row.heatmap_offset, heatmap_length=row.heatmap_length, job=job,
        )
        for row in keep
    ]
    ImagingFinding.objects.bulk_create(findings, batch_size=INSERT_BATCH)
    count = len(findings)
    kept = {r.heatmap for r in keep}
    remove_files(sorted({r.heatmap for r in taken} - kept))
    summary = dict(payload["summary"])
    summary["findings_written"] = count
    if summary["no_active_model"]:
        summary["note"] = "no active model version for: " + ", ".join(summary["no_active_model"])
    log.info("imaging job %s: %s finding(s) written", job.pk, count)
    return summary


def discard(job: Job, payload: dict[str, Any]) -> None:
    """The writer's transaction did not commit: the heat map packs the handler saved are removed
    (the rows that named them were never stored)."""
    remove_files(sorted({r.heatmap for r in payload["rows"]}))
