"""Shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def recreate_database(url: str) -> None:
    """Drop and create the scratch PostgreSQL database named by ``url`` (never a real one)."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def production_django(url: str) -> None:
    """Recreate the scratch database ``url``, point Django at it with the production settings
    (debug off, no broker: jobs in-process, warnings only in the log) and set Django up."""
    recreate_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdss.settings")
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
    import django

    django.setup()


def data_dir(given: Path | None) -> Path:
    """The data folder: ``given``, else CDSS_DATA_DIR, else ../shared/data beside the checkout."""
    return given or Path(os.environ.get("CDSS_DATA_DIR") or ROOT.parent / "shared" / "data")


def pneumonia_source(parser: argparse.ArgumentParser, given: Path | None) -> Path:
    """imaging/pneumoniamnist.npz of the data folder (``data_dir``), or the parser's error naming it."""
    source = data_dir(given) / "imaging" / "pneumoniamnist.npz"
    if not source.is_file():
        parser.error(f"{source} does not exist: give --data-dir (the folder that holds imaging/pneumoniamnist.npz)")
    return source


def fresh_network(arch: str, input_size: int | None, *, label: str = "finding",
                  stem: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and state dict of an imaging network with fresh weights (seed 0), built as a new
    model of that architecture and input size (default: the architecture's) would be: with its
    default stem for that size (``imaging.ml.architectures.default_stem``) unless ``stem`` is given."""
    import torch

    from imaging.ml.architectures import architecture, build_model, default_stem

    chosen = architecture(arch)
    size = input_size or chosen.default_input_size
    stem = stem or default_stem(chosen.name, size)
    config = {"architecture": chosen.name, "stem": stem, "labels": [label], "thresholds": {label: 0.5},
              "input_size": size, "normalisation": {"mean": 0.5, "std": 0.25}}
    torch.manual_seed(0)
    return config, build_model(chosen.name, 1, stem=stem, init_weights="").state_dict()
