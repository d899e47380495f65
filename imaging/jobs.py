"""The imaging job kind: findings and Grad-CAM heat maps for a batch of images.

The job's params hold instance ids only (``instance_ids``); a job without them (the patient
page's "Run") reads every image of its patient. For each image the models that apply to its
modality and body part (``imaging.ml.inference.model_names_for``) are looked up; a model with no
active version is recorded in the job's result as "no active model" and skipped. Images a model
version has already read are skipped, and findings are unique per image, model version and
label, so running a job twice writes nothing twice.

The handler reads and predicts (no writes) through ``imaging.ml.pipeline.read_images``: files are
decoded on a thread pool one batch ahead of the model, each model sees its images in batches of up
to 64 (one forward pass each, which gives the probabilities and the Grad-CAM heat maps), and the
heat map overlay PNGs are encoded on the pool while the next batch runs. A stored file that can no
longer be read is counted in the result (``unreadable``) and the other images go on. The writer
stores the findings and their heat map PNGs with the job's success, in one transaction.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from cdss.models import Job

from .ml.cpuwork import decode_blob
from .models import ImagingFinding, ImagingInstance

log = logging.getLogger("cdss.imaging")

IMAGING_KIND = "imaging"


@dataclass
class FindingRow:
    instance_id: int
    patient_id: int
    model_version_id: int
    label: str
    probability: float
    threshold: float
    positive: bool
    heatmap_png: bytes


def _decode(instance: ImagingInstance) -> np.ndarray | None:
    """The image the models read: the stored file rendered as its preview was (same frame,
    default window; ``imaging.pixels.model_image``); None if the stored file cannot be read any more."""
    return decode_blob(_fetch(instance))


def _fetch(instance: ImagingInstance) -> tuple[bytes, int | None] | None:
    """The stored file's bytes and the frame to read, for decoding in a worker process; None if
    the file cannot be read any more."""
    try:
        with default_storage.open(str(instance.file.name), "rb") as fh:
            return fh.read(), instance.frame_index
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
        for out in read_images(model, todo, _decode, _overlay_size, batch_size=BATCH, processes=processes,
                               fetch=_fetch):
            if out.probabilities is None:
                unreadable += 1
                continue
            instance = out.item
            for label in model.labels:
                rows.append(FindingRow(
                    instance_id=instance.pk, patient_id=instance.patient_id,
                    model_version_id=model.model_version_id, label=label,
                    probability=out.probabilities[label], threshold=float(model.thresholds[label]),
                    positive=out.positive[label], heatmap_png=out.overlays.get(label, b""),
                ))
        ctx.progress(int(100 * (len(models) + len(inactive)) / max(len(by_model), 1)), f"{name}: {len(todo)} image(s)")
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
    rows: list[FindingRow] = payload["rows"]
    existing = set(ImagingFinding.objects.filter(instance_id__in={r.instance_id for r in rows})
                   .values_list("instance_id", "model_version_id", "label"))
    written: list[str] = []
    count = 0
    try:
        for row in rows:
            if (row.instance_id, row.model_version_id, row.label) in existing:
                continue
            finding = ImagingFinding(
                instance_id=row.instance_id, patient_id=row.patient_id, model_version_id=row.model_version_id,
                label=row.label, probability=min(max(row.probability, 0.0), 1.0), threshold=row.threshold,
                positive=row.positive, job=job,
            )
            if row.heatmap_png:
                name = default_storage.save(f"imaging/heatmaps/{finding.external_id.hex}.png",
                                            ContentFile(row.heatmap_png))
                written.append(name)
                finding.heatmap.name = name
            finding.save(force_insert=True)
            count += 1
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise
    summary = dict(payload["summary"])
    summary["findings_written"] = count
    if summary["no_active_model"]:
        summary["note"] = "no active model version for: " + ", ".join(summary["no_active_model"])
    log.info("imaging job %s: %s finding(s) written", job.pk, count)
    return summary
