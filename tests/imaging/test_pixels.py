"""The pixel pipeline, without a database, on the real files of pydicom and pydicom-data.

Every file ``pydicom.data.get_testdata_files()`` lists either becomes a preview or is rejected
with a reason; the expected outcome of each rejected file is pinned below, with why.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file, get_testdata_files

from imaging.dicom import ImageFileError, dicom_meta, read_dicom
from imaging.pixels import (
    ANALYSIS_MAX_SIDE,
    PREVIEW_MAX_SIDE,
    THUMBNAIL_MAX_SIDE,
    Rendering,
    analysis_bytes,
    analysis_copy,
    custom_window,
    fit_size,
    load_image,
    modality_values,
    model_image,
    preview_png,
    render_dicom,
    thumbnail_png,
)


def name_of(path: str) -> str:
    """The path below the data folder (pydicom's test_files/ or pydicom-data's data/)."""
    marker = "/test_files/"
    return "test_files/" + path.split(marker, 1)[1] if marker in path else Path(path).name


def data(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]


# Compressed transfer syntaxes without a decoder in this installation (Pillow decodes JPEG
# baseline and JPEG 2000; pyjpegls, which highdicom brings, JPEG-LS; pydicom itself RLE and
# deflate): JPEG lossless (process 14) and 12-bit JPEG extended need pylibjpeg-libjpeg or GDCM.
UNSUPPORTED = {
    "JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "bad_sequence.dcm",
    "test_files/JPEG-lossy.dcm", "test_files/JPGExtended.dcm", "test_files/SC_rgb_jpeg_gdcm.dcm",
}
# Deliberately short files.
TRUNCATED = {"emri_small_jpeg_2k_lossless_too_short.dcm", "test_files/MR_truncated.dcm"}
CORRUPT = {
    "test_files/JPEG2000-embedded-sequence-delimiter.dcm",  # the codestream claims 3.8e12 pixels
    "test_files/GDCMJ2K_TextGBR.dcm",  # a codestream Pillow's OpenJPEG reads as broken
    "test_files/badVR.dcm",  # Rows written as IS "1A"
    "test_files/meta_missing_tsyntax.dcm",  # pixel data without Rows/Columns
    "test_files/nested_priv_SQ.dcm",  # likewise
}
# Not images: structured reports, RT plans, waveforms, DICOMDIRs, datasets without pixel data,
# and files that are not DICOM at all (text, JSON, ICC profile, gzip, dumps).
NOT_DICOM = {
    "test_files/README.txt", "test_files/crayons.icc", "test_files/dicomdirtests/README.txt",
    "test_files/dicomdirtests/TINY_ALPHA/README", "test_files/no_meta.dcm", "test_files/rtplan.dump",
    "test_files/rtstruct.dcm", "test_files/rtstruct.dump", "test_files/test1.json", "test_files/test_PN.json",
    "test_files/zipMR.gz",
}
NO_PIXELS_PREFIXES = ("test_files/dicomdirtests/TINY_ALPHA/PT000000/",)  # 62 CT headers without pixel data
NO_PIXELS = {
    "test_files/UN_sequence.dcm", "test_files/dicomdirtests/DICOMDIR", "test_files/dicomdirtests/DICOMDIR-bigEnd",
    "test_files/dicomdirtests/DICOMDIR-empty.dcm", "test_files/dicomdirtests/DICOMDIR-implicit",
    "test_files/dicomdirtests/DICOMDIR-nooffset", "test_files/dicomdirtests/DICOMDIR-nopatient",
    "test_files/dicomdirtests/DICOMDIR-reordered", "test_files/dicomdirtests/TINY_ALPHA/DICOMDIR",
    "test_files/empty_charset_LEI.dcm", "test_files/no_meta_group_length.dcm", "test_files/priv_SQ.dcm",
    "test_files/reportsi.dcm", "test_files/reportsi_with_empty_number_tags.dcm", "test_files/rtplan.dcm",
    "test_files/rtplan_truncated.dcm", "test_files/test-SR.dcm", "test_files/waveform_ecg.dcm",
    "test_files/ExplVR_BigEndNoMeta.dcm", "test_files/ExplVR_LitEndNoMeta.dcm",
}


def expected_code(name: str) -> str | None:
    if name in UNSUPPORTED:
        return "unsupported"
    if name in TRUNCATED:
        return "truncated"
    if name in CORRUPT:
        return "corrupt"
    if name in NOT_DICOM or name in NO_PIXELS or name.startswith(NO_PIXELS_PREFIXES):
        return "not-image"
    return None


def test_every_pydicom_test_file_becomes_a_preview_or_is_rejected_with_its_reason() -> None:
    outcomes: dict[str, str] = {}
    for path in sorted(get_testdata_files()):
        if not os.path.isfile(path):
            continue  # get_testdata_files also lists the folders of dicomdirtests/
        name = name_of(path)
        blob = Path(path).read_bytes()
        try:
            loaded = load_image(blob)
        except ImageFileError as exc:
            outcomes[name] = exc.code
            assert exc.message and len(exc.message) < 300, name
            assert expected_code(name) == exc.code, f"{name}: rejected as {exc.code} ({exc.message})"
            if exc.code == "unsupported":
                assert "no decoder" in exc.message, name
            continue
        outcomes[name] = "preview"
        assert expected_code(name) is None, f"{name}: expected {expected_code(name)}, got a preview"
        rendering = loaded.rendering
        assert rendering.image.dtype == np.float32 and rendering.image.ndim == 2, name
        assert 0.0 <= float(rendering.image.min()) <= float(rendering.image.max()) <= 1.0, name
        assert (rendering.height, rendering.width) == (loaded.meta.rows, loaded.meta.columns), name
        assert 0 <= rendering.frame_index < loaded.meta.frames, name
        assert loaded.meta.sop_instance_uid and len(loaded.meta.sop_instance_uid) <= 64, name
        preview = Image.open(io.BytesIO(preview_png(rendering)))
        assert preview.format == "PNG" and max(preview.size) <= PREVIEW_MAX_SIDE, name
        assert preview.mode == ("RGB" if rendering.rgb is not None else "L"), name
        copy = model_image(analysis_bytes(rendering))  # what the imaging job reads
        assert copy.dtype == np.float32 and copy.shape[::-1] == fit_size(rendering.width, rendering.height,
                                                                          ANALYSIS_MAX_SIDE), name
        if copy.shape == rendering.image.shape:
            assert np.abs(copy - rendering.image).max() <= 1 / 65535, name
        else:
            assert abs(float(copy.mean()) - float(rendering.image.mean())) < 0.01, name
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    # pydicom 3.0.2 + pydicom-data 1.0.0: 244 files (and 17 folders).
    assert counts == {"preview": 150, "not-image": 81, "unsupported": 6, "corrupt": 5, "truncated": 2}


@pytest.mark.parametrize(("original", "jpeg_ls"), [("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
                                                   ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm")])
def test_a_jpeg_ls_lossless_file_renders_as_its_uncompressed_original(original: str, jpeg_ls: str) -> None:
    plain, packed = load_image(data(original)), load_image(data(jpeg_ls))
    assert packed.meta.transfer_syntax_name == "JPEG-LS Lossless Image Compression"
    assert packed.meta.frames == plain.meta.frames and packed.rendering.frame_index == plain.rendering.frame_index
    assert np.array_equal(packed.rendering.image, plain.rendering.image)


def test_a_monochrome1_chest_cr_is_inverted_after_windowing() -> None:
    ds = read_dicom(data("RG1_UNCR.dcm"))
    meta = dicom_meta(ds, digest="x")
    assert (meta.modality, meta.photometric, meta.body_part, meta.view_position) == ("CR", "MONOCHROME1", "CHEST", "PA")
    as_stored = render_dicom(ds, meta)
    ds.PhotometricInterpretation = "MONOCHROME2"
    meta2 = dicom_meta(ds, digest="x")
    plain = render_dicom(ds, meta2)
    assert as_stored.preset is not None and as_stored.preset.center == 15000 and as_stored.preset.width == 30000
    # PS3.3 C.7.6.3.1.2: MONOCHROME1 shows the minimum as white: the same window, inverted.
    np.testing.assert_allclose(as_stored.image, 1.0 - plain.image, atol=1e-6)


def test_the_jpeg2000_copy_of_the_cr_renders_like_the_uncompressed_one() -> None:
    a = load_image(data("RG1_UNCR.dcm")).rendering.image
    b = load_image(data("RG1_J2KR.dcm")).rendering.image  # lossless JPEG 2000, decoded by Pillow
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_ct_rescale_gives_hounsfield_units_and_windows_map_them() -> None:
    ds = read_dicom(data("CT_small.dcm"))
    meta = dicom_meta(ds, digest="x")
    hu = modality_values(ds, 0)
    stored = ds.pixel_array.astype(np.float64)
    # RescaleSlope 1, RescaleIntercept -1024 (in the file): HU = stored - 1024.
    np.testing.assert_allclose(hu, stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    # stored 128..2191 -> -896..1167 HU: air-filled lung to dense bone, inside CT's -1024..3071 range
    assert (hu.min(), hu.max()) == (-896.0, 1167.0)
    names = [p.name for p in meta.presets]
    assert names[0] == "Soft tissue (W 400 L 40)" and "Lung (W 1500 L -600)" in names  # no window in the file
    rendering = render_dicom(ds, meta)
    # PS3.3 C.11.2.1.2.1 LINEAR with W 400 L 40: below -160 HU black, above 240 HU white.
    assert np.all(rendering.image[hu <= -160.5] == 0.0) and np.all(rendering.image[hu > 239.5] == 1.0)
    inside = (hu > -150) & (hu < 230)
    expected = ((hu[inside] - 39.5) / 399 + 0.5)
    np.testing.assert_allclose(rendering.image[inside], expected, atol=1e-5)
    lung = render_dicom(ds, meta, preset=names.index("Lung (W 1500 L -600)"))
    assert float(lung.image.mean()) != pytest.approx(float(rendering.image.mean()), abs=0.01)


def test_the_window_of_the_file_is_the_default_and_others_can_be_chosen() -> None:
    ds = read_dicom(data("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    meta = dicom_meta(ds, digest="x")
    assert [p.kind for p in meta.presets] == ["window", "window"]
    first, second = render_dicom(ds, meta), render_dicom(ds, meta, preset=1)
    assert first.preset == meta.presets[0] and second.preset == meta.presets[1]
    assert not np.allclose(first.image, second.image)
    with pytest.raises(ImageFileError, match="preset 7 does not exist"):
        render_dicom(ds, meta, preset=7)


def test_a_window_of_the_users_own_maps_the_modality_values_as_a_file_window_would() -> None:
    """A window set in the viewer (PS3.3 C.11.2.1.2.1 LINEAR) on the CT's HU, and on a MONOCHROME1
    radiograph (inverted after it); a grey frame reports its range of values, a colour one none and
    refuses a window."""
    ds = read_dicom(data("CT_small.dcm"))
    meta = dicom_meta(ds, digest="x")
    hu = modality_values(ds, 0)
    rendering = render_dicom(ds, meta, window=custom_window(0.0, 1000.0))
    assert rendering.value_range == (-896.0, 1167.0) and rendering.preset is not None
    assert (rendering.preset.source, rendering.preset.name) == ("custom", "W 1000 L 0")
    inside = (hu > -490) & (hu < 490)
    np.testing.assert_allclose(rendering.image[inside], (hu[inside] + 0.5) / 999 + 0.5, atol=1e-5)
    assert np.all(rendering.image[hu <= -500] == 0.0) and np.all(rendering.image[hu >= 500] == 1.0)

    cr = read_dicom(data("RG1_UNCR.dcm"))
    cr_meta = dicom_meta(cr, digest="x")
    own = render_dicom(cr, cr_meta, window=custom_window(15000.0, 30000.0))  # the file's own window
    np.testing.assert_allclose(own.image, render_dicom(cr, cr_meta).image, atol=1e-6)

    rgb = read_dicom(data("SC_rgb.dcm"))
    assert render_dicom(rgb, dicom_meta(rgb, digest="x")).value_range is None
    with pytest.raises(ImageFileError, match="has no window to set"):
        render_dicom(rgb, dicom_meta(rgb, digest="x"), window=custom_window(100.0, 50.0))
    for center, width, reason in ((0.0, 0.5, "at least 1"), (float("nan"), 10.0, "finite"),
                                  (0.0, float("inf"), "finite")):
        with pytest.raises(ValueError, match=reason):
            custom_window(center, width)


def test_a_full_size_preview_keeps_every_pixel() -> None:
    rendering = load_image(data("RG1_UNCR.dcm")).rendering
    full = Image.open(io.BytesIO(preview_png(rendering, full=True)))
    assert full.size == (rendering.width, rendering.height) and max(full.size) > PREVIEW_MAX_SIDE
    np.testing.assert_array_equal(np.asarray(full), np.round(rendering.image * 255).astype(np.uint8))


def test_a_voi_lut_sequence_is_applied_before_any_window() -> None:
    ds = read_dicom(data("vlut_04.dcm"))
    meta = dicom_meta(ds, digest="x")
    assert meta.presets[0].kind == "lut"
    rendering = render_dicom(ds, meta)
    lut = np.asarray(ds.VOILUTSequence[0].LUTData)
    first = int(ds.VOILUTSequence[0].LUTDescriptor[1])
    raw = ds.pixel_array.astype(np.int64)
    expected = lut[np.clip(raw - first, 0, len(lut) - 1)] / (2**16 - 1)
    np.testing.assert_allclose(rendering.image, expected, atol=1e-6)


def test_a_modality_lut_sequence_is_applied() -> None:
    ds = read_dicom(data("mlut_18.dcm"))
    values = modality_values(ds, 0)
    lut = np.asarray(ds.ModalityLUTSequence[0].LUTData)
    assert set(np.unique(values)).issubset(set(lut.astype(float)))


def test_a_multi_frame_image_records_its_frames_and_shows_the_middle_one() -> None:
    loaded = load_image(data("emri_small.dcm"))
    assert loaded.meta.frames == 10 and loaded.rendering.frame_index == 5
    ds = loaded.dataset
    assert ds is not None
    frames = ds.pixel_array
    np.testing.assert_allclose(loaded.rendering.image, (frames[5] - frames[5].min()) / np.ptp(frames[5]), atol=1e-6)
    other = render_dicom(ds, loaded.meta, frame=0)
    assert other.frame_index == 0 and not np.allclose(other.image, loaded.rendering.image)
    with pytest.raises(ImageFileError, match="frame 10 does not exist"):
        render_dicom(ds, loaded.meta, frame=10)


def test_an_enhanced_ct_takes_rescale_and_window_from_its_functional_groups() -> None:
    loaded = load_image(data("eCT_Supplemental.dcm"))
    assert loaded.meta.frames == 2
    preset = loaded.rendering.preset
    assert preset is not None and (preset.center, preset.width) == (49.0, 102.0)  # Frame VOI LUT macro
    assert loaded.dataset is not None
    hu = modality_values(loaded.dataset, 1)
    raw = pydicom.pixels.pixel_array(loaded.dataset, index=1).astype(np.float64)
    np.testing.assert_allclose(hu, raw - 1024.0)  # Pixel Value Transformation: intercept -1024


def test_colour_images_keep_their_colour_in_the_preview() -> None:
    rgb = load_image(data("SC_rgb.dcm"))
    ybr = load_image(data("SC_ybr_full_uncompressed.dcm"))  # YBR_FULL, converted to RGB
    preview = np.asarray(Image.open(io.BytesIO(preview_png(rgb.rendering))))
    assert tuple(preview[5, 5]) == (255, 0, 0)  # the top band of SC_rgb is pure red
    assert np.abs(ybr.rendering.rgb - rgb.rendering.rgb).max() < 0.03  # type: ignore[operator]
    # luminance for the model: BT.601 of pure red
    assert rgb.rendering.image[5, 5] == pytest.approx(0.299, abs=1e-3)


def test_palette_colour_is_looked_up_whatever_the_byte_order() -> None:
    little = load_image(data("OBXXXX1A.dcm")).rendering
    big = load_image(data("OBXXXX1A_expb.dcm")).rendering
    assert little.rgb is not None and big.rgb is not None
    np.testing.assert_allclose(little.rgb, big.rgb, atol=1 / 255 + 1e-6)


def test_previews_and_thumbnails_are_scaled_down_never_up() -> None:
    big = load_image(data("RG3_UNCR.dcm")).rendering  # 1760 x 1760
    small = load_image(data("CT_small.dcm")).rendering  # 128 x 128
    assert Image.open(io.BytesIO(preview_png(big))).size == (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE)
    assert Image.open(io.BytesIO(thumbnail_png(big))).size == (THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)
    assert Image.open(io.BytesIO(preview_png(small))).size == (128, 128)


def test_the_analysis_copy_is_the_models_image_at_most_512_px_a_side_in_16_bits() -> None:
    big = load_image(data("RG1_UNCR.dcm")).rendering  # 1,841 x 1,955: a chest CR
    blob = analysis_bytes(big)
    levels = np.load(io.BytesIO(blob), allow_pickle=False)
    assert levels.dtype == np.uint16 and levels.shape[::-1] == (482, 512) == fit_size(big.width, big.height,
                                                                                       ANALYSIS_MAX_SIDE)
    copy = model_image(blob)
    assert copy.dtype == np.float32 and np.array_equal(copy * 65535, levels.astype(np.float32))
    # the shrink the models make (antialiased bilinear on float pixels), to 1/65535
    shrunk = np.asarray(Image.fromarray(big.image).resize((482, 512), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(copy - np.clip(shrunk, 0, 1)).max() <= 0.5 / 65535 + 1e-7

    ramp = np.linspace(0.0, 1.0, 300 * 20, dtype=np.float32).reshape(20, 300)  # no larger than 512: kept
    small = model_image(analysis_bytes(Rendering(image=ramp * np.float32(0.5), rgb=None, frame_index=0, preset=None)))
    assert small.shape == ramp.shape and np.abs(small - ramp * 0.5).max() <= 0.5 / 65535 + 1e-7

    # it is no upload: load_image refuses it; a damaged or foreign array is refused with a reason
    with pytest.raises(ImageFileError) as refused:
        load_image(blob)
    assert refused.value.code == "not-image"
    for bad in (blob[:100], _npy(np.zeros((4, 4), np.float32)), _npy(np.zeros((2, 4, 4), np.uint16)),
                _npy(np.zeros((0, 4), np.uint16))):
        with pytest.raises(ImageFileError, match="analysis copy") as err:
            model_image(bad)
        assert err.value.code == "corrupt"
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageFileError, match="analysis copy"):  # never unpickled
        model_image(pickled.getvalue())


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_an_analysis_copy_is_made_where_it_reads_faster_than_the_file() -> None:
    grey = np.tile(np.arange(256, dtype=np.uint8), (40, 2))  # 40 x 512
    assert analysis_copy(load_image(png_of(grey))) is None  # 8-bit grey: model_image reads it as it is
    assert analysis_copy(load_image(png_of(grey, fmt="JPEG"))) is None
    made = {
        "wider than 512": png_of(np.tile(grey, (1, 2))),
        "16-bit": png_of(grey.astype(np.uint16) * 200),
        "colour": png_of(np.dstack([grey, grey, grey // 2]), fmt="JPEG"),
        "DICOM": data("CT_small.dcm"),
    }
    for what, blob in made.items():
        loaded = load_image(blob)
        copy = analysis_copy(loaded)
        assert copy is not None, what
        assert model_image(copy).shape[::-1] == fit_size(loaded.rendering.width, loaded.rendering.height,
                                                         ANALYSIS_MAX_SIDE), what


def png_of(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode=mode).save(out, format=fmt)
    return out.getvalue()


def test_png_and_jpeg_uploads_become_images_with_uids_from_their_content() -> None:
    gradient = np.tile(np.arange(256, dtype=np.uint8), (32, 1))
    gray = load_image(png_of(gradient))
    assert gray.meta.format == "png" and gray.meta.photometric == "MONOCHROME2"
    np.testing.assert_allclose(gray.rendering.image[0], np.arange(256) / 255, atol=1e-6)
    assert gray.meta.sop_instance_uid.startswith("2.25.") and gray.meta.uids_derived
    assert load_image(png_of(gradient)).meta.sop_instance_uid == gray.meta.sop_instance_uid

    sixteen = (np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1)))
    wide = load_image(png_of(sixteen))
    assert wide.meta.bits_stored == 16
    assert wide.rendering.image.min() == 0.0 and wide.rendering.image.max() == 1.0  # 12-bit range stretched

    colour = np.zeros((20, 30, 3), dtype=np.uint8)
    colour[..., 1] = 200
    jpeg = load_image(png_of(colour, fmt="JPEG"))
    assert jpeg.meta.format == "jpeg" and jpeg.rendering.rgb is not None
    assert jpeg.rendering.image.mean() == pytest.approx(0.587 * 200 / 255, abs=0.02)


@pytest.mark.parametrize(
    ("blob", "code"),
    [
        (b"", "not-image"),
        (b"%PDF-1.7 not an image", "not-image"),
        (png_of(np.zeros((64, 64), dtype=np.uint8))[:60], "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
    ],
    ids=["empty", "pdf", "truncated-png", "corrupt-png"],
)
def test_bad_files_are_rejected_with_a_reason(blob: bytes, code: str) -> None:
    with pytest.raises(ImageFileError) as info:
        load_image(blob)
    assert info.value.code == code
