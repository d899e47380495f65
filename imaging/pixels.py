"""From a file's bytes to the images the app uses: a float32 image in [0, 1] for the models, an
8-bit PNG preview and a thumbnail. Pure code (no Django); nothing here logs.

DICOM grey-scale pipeline (PS3.3 C.11, PS3.4 N.2.1.1): stored values -> Modality LUT or rescale
(``pydicom.pixels.apply_modality_lut``) -> VOI LUT or window (``apply_voi_lut``; the first preset
unless one is chosen; with neither, the frame's own minimum to maximum) -> scaled to [0, 1] by the
output range of that step -> MONOCHROME1 inverted (after windowing, as the standard orders).
Colour (RGB, YBR_* converted by pydicom, PALETTE COLOR through its LUT) is kept for the preview and
reduced to luminance (ITU-R BT.601 weights) for the model. A multi-frame image is shown by its
middle frame unless another is chosen; the number of frames is recorded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .imagefile import (
    MAX_FRAME_PIXELS,
    MONOCHROME,
    ImageFileError,
    ImageMeta,
    Preset,
    looks_like_part10,
    uid_from_digest,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

PREVIEW_MAX_SIDE = 1024
THUMBNAIL_MAX_SIDE = 160
# The analysis copy (``analysis_bytes``, ``analysis_copy``): what the models read, kept beside the
# original so that the imaging job (after upload, and again for each new model version) reads an
# array of at most ANALYSIS_MAX_SIDE a side (a chest radiograph's: 0.5 MB, read in about 0.2 ms)
# instead of decoding the original (its JPEG 2000: 0.3-0.6 s; uncompressed, 50-70 ms; a 16-bit PNG
# of the copy took 4 ms). Larger than any registered model's input (Inception-V3: 299); a model of
# a larger input reads the original. Made at upload for the images a model reads
# (``imaging.services``). Stored as NumPy's .npy format (a header and the raw uint16
# levels, value / 65535), which no upload can be: ``model_image`` knows it by its magic bytes.
ANALYSIS_MAX_SIDE = 512
_NPY_MAGIC = b"\x93NUMPY"
# ITU-R BT.601 luma weights.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Rendering:
    """One frame, ready to show and to analyse."""

    image: np.ndarray  # float32, H x W, [0, 1]: what the models read
    rgb: np.ndarray | None  # float32, H x W x 3, [0, 1], colour images only (for the preview)
    frame_index: int
    preset: Preset | None
    # A grey DICOM frame's range of values after the Modality LUT or rescale (e.g. HU on CT): what a
    # window's centre and width are given in. None for colour images and PNG/JPEG files.
    value_range: tuple[float, float] | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class LoadedImage:
    meta: ImageMeta
    rendering: Rendering
    sha256: str
    dataset: Dataset | None = None  # DICOM only


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sniff(data: bytes) -> str:
    """ "png", "jpeg", "dicom" (a Part 10 file) or "" (perhaps a bare DICOM dataset)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if looks_like_part10(data):
        return "dicom"
    return ""


def load_image(data: bytes, *, frame: int | None = None, preset: int | None = None,
               window: Preset | None = None) -> LoadedImage:
    """Read and render a DICOM, PNG or JPEG file; ``ImageFileError`` says why one cannot be.
    ``window`` (a grey DICOM image only) renders with that window instead of a preset of the file."""
    if not data:
        raise ImageFileError("not-image", "the file is empty")
    digest = sha256_of(data)
    kind = sniff(data)
    if kind in ("png", "jpeg"):
        meta, rendering = load_bitmap(data, kind=kind, digest=digest)
        return LoadedImage(meta=meta, rendering=rendering, sha256=digest)
    from .dicom import dicom_meta, read_dicom  # pydicom only for DICOM files

    ds = read_dicom(data)
    meta = dicom_meta(ds, digest=digest)
    rendering = render_dicom(ds, meta, frame=frame, preset=preset, window=window)
    return LoadedImage(meta=meta, rendering=rendering, sha256=digest, dataset=ds)


def model_image(data: bytes, *, frame: int | None = None) -> np.ndarray:
    """The 2-D grey image the models read, as ``load_image(data, frame=frame).rendering.image``,
    without what only storing a file needs (its digest, metadata and colour preview). An 8-bit grey
    PNG or JPEG comes back as its uint8 array (divided by 255 in float32 it is that float image,
    bit for bit), so the models' batched preprocessing converts it; anything else as the float32
    image. An analysis copy (``analysis_bytes``, never an upload) is read as the image it holds.
    ``ImageFileError`` says why a file cannot be read."""
    if not data:
        raise ImageFileError("not-image", "the file is empty")
    if data.startswith(_NPY_MAGIC):
        return analysis_image(data)
    kind = sniff(data)
    if kind in ("png", "jpeg"):
        image = _open_bitmap(data, kind)
        if image.mode in ("1", "L", "LA"):
            return np.asarray(image if image.mode == "L" else image.convert("L"))
        return _bitmap_grey(image)[0]
    return load_image(data, frame=frame).rendering.image


# --- DICOM --------------------------------------------------------------------------------------


def custom_window(center: float, width: float) -> Preset:
    """A window the user chose (centre and width in the image's values after the Modality LUT or
    rescale), checked as the standard checks a file's: LINEAR needs a width of at least 1 (PS3.3
    C.11.2.1.2.1)."""
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError("the window's centre and width must be finite numbers")
    if width < 1:
        raise ValueError("the window's width must be at least 1")
    return Preset(name=f"W {width:g} L {center:g}", kind="window", center=float(center), width=float(width),
                  source="custom")


def render_dicom(ds: Dataset, meta: ImageMeta, *, frame: int | None = None, preset: int | None = None,
                 window: Preset | None = None) -> Rendering:
    from .dicom import decode_frame, frame_view, window_presets

    index = meta.frames // 2 if frame is None else frame
    if not 0 <= index < meta.frames:
        raise ImageFileError("not-image", f"frame {index} does not exist (the image has {meta.frames})")
    raw = decode_frame(ds, index)
    photometric = meta.photometric
    with np.errstate(all="ignore"):
        if photometric in MONOCHROME:
            if raw.ndim != 2:
                raise ImageFileError("corrupt", f"a {photometric} frame decoded to shape {raw.shape}")
            view = frame_view(ds, index)
            presets = meta.presets if frame is None or frame == meta.frames // 2 else []
            if not presets and (meta.presets or frame is not None):
                presets = window_presets(view, modality=meta.modality)
            chosen = window if window is not None else _choose(presets, preset)
            gray, value_range = _grayscale(raw, view, chosen)
            if photometric == "MONOCHROME1":
                gray = 1.0 - gray
            return Rendering(image=_finite(gray), rgb=None, frame_index=index, preset=chosen, value_range=value_range)
        if window is not None:
            raise ImageFileError("unsupported", f"a {photometric or 'colour'} image has no window to set")
        rgb = _colour(raw, ds, meta)
    gray = (rgb @ LUMA).astype(np.float32)
    return Rendering(image=_finite(gray), rgb=rgb, frame_index=index, preset=None)


def modality_values(ds: Dataset, index: int) -> np.ndarray:
    """Frame ``index`` after the Modality LUT or rescale (e.g. HU on CT), as float64."""
    from pydicom.pixels import apply_modality_lut

    from .dicom import decode_frame, frame_view

    return apply_modality_lut(decode_frame(ds, index), frame_view(ds, index)).astype(np.float64)


def _choose(presets: list[Preset], preset: int | None) -> Preset | None:
    if preset is None:
        return presets[0] if presets else None
    if not 0 <= preset < len(presets):
        raise ImageFileError("not-image", f"window preset {preset} does not exist ({len(presets)} presets)")
    return presets[preset]


def _grayscale(raw: np.ndarray, view: Dataset, preset: Preset | None) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Modality LUT, then the preset's VOI step, scaled to [0, 1] by that step's output range; and
    the range of the values after the Modality LUT (None where no value is finite)."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_modality_lut(raw, view).astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - a malformed Modality LUT module
        raise ImageFileError("corrupt", f"the Modality LUT or rescale of the image is invalid "
                                        f"({type(exc).__name__})") from None
    finite = values[np.isfinite(values)]
    value_range = (float(finite.min()), float(finite.max())) if finite.size else None
    if preset is None:
        return _stretch(values), value_range
    try:
        if preset.kind == "lut":
            out = apply_voi_lut(values.astype(np.int64), view, index=preset.index, prefer_lut=True)
            bits = int(view.VOILUTSequence[preset.index].LUTDescriptor[2])
            lo, hi = 0.0, float(2**bits - 1)
        else:
            window = DicomDataset()
            for keyword in ("PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleSlope",
                            "RescaleIntercept", "ModalityLUTSequence"):
                if keyword in view:
                    window[keyword] = view[keyword]
            window.PhotometricInterpretation = "MONOCHROME2"  # inversion is applied after, by the caller
            window.WindowCenter, window.WindowWidth = preset.center, preset.width
            window.VOILUTFunction = preset.function
            out = apply_voi_lut(values, window, index=0, prefer_lut=False)
            lo, hi = _window_output_range(window)
    except ImageFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed VOI LUT module: show the full range instead
        del exc
        return _stretch(values), value_range
    return np.clip((np.asarray(out, dtype=np.float64) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0), value_range


def _window_output_range(window: Dataset) -> tuple[float, float]:
    """The range ``pydicom.pixels.apply_windowing`` maps onto (its own rule, mirrored here)."""
    bits = int(window.get("BitsStored") or 16)
    if window.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(window.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(window.get("PixelRepresentation") or 0) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = window.get("RescaleSlope"), window.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return (min(lo, hi), max(lo, hi))


def _stretch(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float64)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def _colour(raw: np.ndarray, ds: Dataset, meta: ImageMeta) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    photometric = meta.photometric
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(raw, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:  # noqa: BLE001 - a malformed palette
            raise ImageFileError("corrupt", f"the palette colour lookup table is invalid ({type(exc).__name__})") from None
        top = float(2 ** (16 if bits not in (8, 16) else bits) - 1)
        if bits == 16 and rgb.max() <= 255:
            # PS3.3 C.7.6.3.1.5: some writers store 8-bit entries in a 16-bit table.
            top = 255.0
        return np.clip(rgb.astype(np.float32) / top, 0.0, 1.0)
    if raw.ndim != 3 or raw.shape[-1] not in (3, 4):
        raise ImageFileError("unsupported", f"photometric interpretation {photometric or '(none)'} with frame "
                                            f"shape {raw.shape} is not supported")
    top = float(2 ** max(1, meta.bits_stored) - 1)
    return np.clip(raw[..., :3].astype(np.float32) / top, 0.0, 1.0)


def _finite(image: np.ndarray) -> np.ndarray:
    return np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0).astype(np.float32)


# --- PNG and JPEG -------------------------------------------------------------------------------


def _open_bitmap(data: bytes, kind: str) -> Image.Image:
    """The decoded PNG or JPEG, EXIF orientation applied, or ``ImageFileError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_FRAME_PIXELS:
                raise ImageFileError("too-large", f"{image.width} x {image.height} pixels exceed the limit")
            image.load()
            image = ImageOps.exif_transpose(image) or image
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageFileError("too-large", "the image has more pixels than allowed") from None
    except UnidentifiedImageError:
        raise ImageFileError("corrupt", f"the {kind.upper()} file could not be read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc).lower()
        code = "truncated" if "truncat" in text or "end of file" in text else "corrupt"
        raise ImageFileError(code, f"the {kind.upper()} file is {'truncated' if code == 'truncated' else 'corrupt'} "
                                   f"({type(exc).__name__})") from None
    return image


def load_bitmap(data: bytes, *, kind: str, digest: str) -> tuple[ImageMeta, Rendering]:
    """A PNG or JPEG: grey or colour at its own bit depth (16-bit grey stretched to its range);
    JPEG EXIF orientation applied. It has no UIDs, so they are made from its content."""
    image = _open_bitmap(data, kind)
    gray, rgb, bits = _bitmap_grey(image)
    meta = ImageMeta(
        format=kind,
        sop_instance_uid=uid_from_digest(digest, "instance"),
        photometric="RGB" if rgb is not None else "MONOCHROME2",
        rows=int(gray.shape[0]),
        columns=int(gray.shape[1]),
        frames=1,
        bits_stored=bits,
        uids_derived=True,
    )
    return meta, Rendering(image=gray, rgb=rgb, frame_index=0, preset=None)


def _bitmap_grey(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(float32 grey image in [0, 1], the RGB image for colour ones, bits per sample)."""
    mode = image.mode
    rgb: np.ndarray | None = None
    if mode in ("1", "L", "LA"):
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        bits = 8
    elif mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        gray = _stretch(np.asarray(image, dtype=np.float64)).astype(np.float32)
        bits = 16
    else:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        gray = (rgb @ LUMA).astype(np.float32)
        bits = 8
    return _finite(gray), rgb, bits


# --- PNG output ---------------------------------------------------------------------------------


def to_pil(rendering: Rendering) -> Image.Image:
    if rendering.rgb is not None:
        return Image.fromarray(np.round(rendering.rgb * 255.0).astype(np.uint8))
    return Image.fromarray(np.round(rendering.image * 255.0).astype(np.uint8))


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down (never up) to ``max_side`` on the longer side, the shape kept
    (each side rounded, at least 1)."""
    if width < 1 or height < 1:
        raise ValueError("width and height must be positive")
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def png_bytes(image: Image.Image, *, max_side: int) -> bytes:
    """The image as PNG, scaled down (never up) to fit ``max_side``."""
    size = fit_size(image.width, image.height, max_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def preview_png(rendering: Rendering, *, full: bool = False) -> bytes:
    """The preview (at most ``PREVIEW_MAX_SIDE`` a side), or with ``full`` every pixel of the frame
    (for a viewer zoomed in past the preview's own pixels)."""
    return png_bytes(to_pil(rendering), max_side=max(rendering.width, rendering.height) if full else PREVIEW_MAX_SIDE)


def thumbnail_png(rendering: Rendering) -> bytes:
    return png_bytes(to_pil(rendering), max_side=THUMBNAIL_MAX_SIDE)


def analysis_bytes(rendering: Rendering) -> bytes:
    """The analysis copy: the image the models read (``rendering.image``, float32 in [0, 1]),
    shrunk to ``ANALYSIS_MAX_SIDE`` (``fit_size``) as the models shrink their input (bilinear,
    antialiased, on float pixels: ``imaging.ml.cpuwork.shrink``), as uint16 levels (value x 65535,
    rounded) in a .npy file. ``model_image`` reads it back within 1/131070."""
    image = rendering.image
    size = fit_size(rendering.width, rendering.height, ANALYSIS_MAX_SIDE)
    if size != (rendering.width, rendering.height):
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
                           .resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    levels = np.clip(np.round(np.nan_to_num(image) * 65535.0), 0, 65535).astype(np.uint16)
    out = io.BytesIO()
    np.save(out, levels, allow_pickle=False)
    return out.getvalue()


def analysis_image(data: bytes) -> np.ndarray:
    """An analysis copy (``analysis_bytes``) as the float32 image in [0, 1] it holds;
    ``ImageFileError`` if it is not one."""
    try:
        levels = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise ImageFileError("corrupt", "the analysis copy could not be read") from None
    if not isinstance(levels, np.ndarray) or levels.dtype != np.uint16 or levels.ndim != 2 or 0 in levels.shape:
        raise ImageFileError("corrupt", "the analysis copy is not a 2-D array of 16-bit levels")
    return levels.astype(np.float32) / np.float32(65535.0)


def analysis_copy(loaded: LoadedImage) -> bytes | None:
    """``analysis_bytes`` of the file's rendering where it reads faster than the file: every DICOM
    file, and colour, 16-bit or larger than ``ANALYSIS_MAX_SIDE`` PNG and JPEG files. None for an
    8-bit grey PNG or JPEG of at most that size, whose pixels ``model_image`` gives as they are
    (a 256 x 256 PNG: 0.4 ms), and in the uint8 a GPU worker hands over in a quarter of the bytes."""
    meta, rendering = loaded.meta, loaded.rendering
    if (meta.format in ("png", "jpeg") and meta.photometric == "MONOCHROME2" and meta.bits_stored == 8
            and max(rendering.width, rendering.height) <= ANALYSIS_MAX_SIDE):
        return None
    return analysis_bytes(rendering)


def preview_size(rendering: Rendering) -> tuple[int, int]:
    """(width, height) of the preview PNG, which the heat map overlay must match."""
    return fit_size(rendering.width, rendering.height, PREVIEW_MAX_SIDE)
