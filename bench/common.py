"""Shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
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


def data_dir(given: Path | None) -> Path:
    """The data folder: ``given``, else CDSS_DATA_DIR, else ../shared/data beside the checkout."""
    return given or Path(os.environ.get("CDSS_DATA_DIR") or ROOT.parent / "shared" / "data")


def pneumonia_source(parser: argparse.ArgumentParser, given: Path | None) -> Path:
    """imaging/pneumoniamnist.npz of the data folder (``data_dir``), or the parser's error naming it."""
    source = data_dir(given) / "imaging" / "pneumoniamnist.npz"
    if not source.is_file():
        parser.error(f"{source} does not exist: give --data-dir (the folder that holds imaging/pneumoniamnist.npz)")
    return source
