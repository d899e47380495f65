"""A note's text from what a user sends (typed text or an uploaded file), with one clear rule
for each way it can be wrong (no Django).

The rule for bytes:

- at most ``max_bytes`` (else NoteInputError naming both sizes);
- a UTF-8 byte-order mark is dropped; a UTF-16 one (what Windows Notepad writes as "Unicode")
  means UTF-16; anything else must be UTF-8. Other encodings (Latin-1, Windows-1252...) are
  refused, not guessed: the error names the offset of the first byte that is not UTF-8. Guessing
  would turn "é" into "Ã©" in a clinical record without anyone noticing;
- PDF, Word (.docx/.doc), ZIP and image files are recognised by their first bytes and refused
  by name; any other binary content (a NUL character) is refused;
- RTF is converted to its plain text (``rtf_to_text``);
- line ends become ``\\n``; a note with no visible character is refused (empty).

HTML is kept as sent: the extractor blanks its tags when it reads the note (offsets stay those
of the stored text) and pages show it escaped, as text.
"""

from __future__ import annotations

import codecs
import re

DEFAULT_MAX_BYTES = 2 * 1024 * 1024

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (a Word .docx file is one)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Word/Office (.doc) document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
)


class NoteInputError(ValueError):
    """What is wrong with the note sent. The message never quotes the note."""


def note_text_from_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The text of an uploaded note file (see the module docstring for the rule)."""
    if len(data) > max_bytes:
        raise NoteInputError(f"The note is {len(data):,} bytes; the limit is {max_bytes:,} bytes.")
    for signature, what in _SIGNATURES:
        if data.startswith(signature):
            raise NoteInputError(f"The file is {what}, not text. Send the note as plain text (UTF-8) or RTF.")
    if data.startswith(codecs.BOM_UTF16_LE) or data.startswith(codecs.BOM_UTF16_BE):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise NoteInputError(f"The file starts as UTF-16 but byte offset {exc.start} is not valid UTF-16.") from None
    else:
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteInputError(
                f"The note is not UTF-8 text: the byte at offset {exc.start} (0x{data[exc.start]:02X}) is not valid "
                "UTF-8. Save the file as UTF-8 and send it again."
            ) from None
    return note_text_clean(text, max_bytes=max_bytes)


def note_text_clean(text: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Typed (or decoded) text as it is stored: RTF converted, line ends ``\\n``; refused if
    empty, binary or too long."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise NoteInputError(f"The note is {size:,} bytes; the limit is {max_bytes:,} bytes.")
    nul = text.find("\x00")
    if nul >= 0:
        raise NoteInputError(f"The note holds a NUL character (offset {nul}): it is binary data, not text.")
    if re.search(r"[\ud800-\udfff]", text):
        raise NoteInputError("The note holds invalid characters (unpaired UTF-16 surrogates).")
    if text.lstrip().startswith("{\\rtf"):
        text = rtf_to_text(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise NoteInputError("The note is empty.")
    return text


# --- RTF -------------------------------------------------------------------------------------

# Groups whose text is not part of the document (font and colour tables, metadata, pictures...).
# Rich Text Format specification 1.9.1 (Microsoft, 2008): "destinations"; a group starting with
# \* is an optional destination a reader may skip.
_RTF_SKIP = frozenset("""
    aftncn aftnsep aftnsepc annotation atnauthor atndate atnicn atnid atnparent atnref atntime atrfend atrfstart
    author background bkmkend bkmkstart blipuid buptim category colorschememapping colortbl comment company
    creatim datafield datastore defchp defpap do doccomm docvar dptxbxtext ebcend ebcstart factoidname falt fchars
    ffdeftext ffentrymcr ffexitmcr ffformat ffhelptext ffl ffname ffstattext field file filetbl fldinst fldtype
    fname fontemb fontfile fonttbl footer footerf footerl footerr footnote formfield ftncn ftnsep ftnsepc g
    generator gridtbl header headerf headerl headerr hl hlfr hlinkbase hlloc hlsrc hsv htmltag info keycode
    keywords latentstyles lchars levelnumbers leveltext lfolevel linkval list listlevel listname listoverride
    listoverridetable listpicture liststylename listtable listtext lsdlockedexcept macc maccPr mailmerge maln
    malnScr manager margPr mbar mbarPr mbaseJc mbegChr mborderBox mborderBoxPr mbox mboxPr mchr mcount mctrlPr
    md mdeg mdegHide mden mdiff mdPr me mendChr meqArr meqArrPr mf mfName mfPr mfunc mfuncPr mgroupChr
    mgroupChrPr mgrow mhideBot mhideLeft mhideRight mhideTop mhtmltag mlim mlimloc mlimlow mlimlowPr mlimupp
    mlimuppPr mm mmaddfieldname mmath mmathPict mmathPr mmaxdist mmc mmcJc mmconnectstr mmconnectstrdata
    mmcPr mmcs mmdatasource mmheadersource mmmailsubject mmodso mmodsofilter mmodsofldmpdata mmodsomappedname
    mmodsoname mmodsorecipdata mmodsosort mmodsosrc mmodsotable mmodsoudl mmodsoudldata mmodsouniquetag
    mmPr mmquery mmr mnary mnaryPr mnoBreak mnum mobjDist moMath moMathPara moMathParaPr mopEmu mphant
    mphantPr mplcHide mpos mr mrad mradPr mrPr msepChr mshow mshp msPre msPrePr msSub msSubPr msSubSup
    msSubSupPr msSup msSupPr mstrikeBLTR mstrikeH mstrikeTLBR mstrikeV msub msubHide msup msupHide mtransp
    mtype mvertJc mvfmf mvfml mvtof mvtol mzeroAsc mzeroDesc mzeroWid nesttableprops nextfile nonesttables
    objalias objclass objdata object objname objsect objtime oldcprops oldpprops oldsprops oldtprops
    oleclsid operator panose password passwordhash pgp pgptbl picprop pict pn pnseclvl pntext pntxta pntxtb
    printim private propname protend protstart protusertbl pxe result revtbl revtim rsidtbl rxe shp shpgrp
    shpinst shppict shprslt shptxt sn sp staticval stylesheet subject sv svb tc template themedata title txe
    ud upr userprops wgrffmtfilter windowcaption writereservation writereservhash xe xform xmlattrname
    xmlattrvalue xmlclose xmlname xmlnstbl xmlopen
""".split())
_RTF_SPECIAL = {"par": "\n", "sect": "\n\n", "page": "\n\n", "line": "\n", "tab": "\t", "emdash": "\u2014",
                "endash": "\u2013", "emspace": "\u2003", "enspace": "\u2002", "qmspace": "\u2005",
                "bullet": "\u2022", "lquote": "\u2018", "rquote": "\u2019", "ldblquote": "\u201c",
                "rdblquote": "\u201d", "row": "\n", "cell": " | ", "nestcell": " | "}
# \~ no-break space, \_ no-break hyphen, \- optional hyphen, backslash + line end: a paragraph.
_RTF_SYMBOLS = {"~": "\u00a0", "_": "-", "-": "", "\n": "\n", "\r": "\n"}
_RTF_TOKEN = re.compile(r"\\([a-zA-Z]{1,32})(-?\d{1,10})? ?|\\'([0-9a-fA-F]{2})|\\([^a-zA-Z])|([{}])|[\r\n]+|(.)",
                        re.DOTALL)


def rtf_to_text(rtf: str) -> str:
    """The plain text of an RTF document: destinations skipped, ``\\'hh`` read as Windows-1252,
    ``\\uN`` as Unicode (with its fallback characters dropped), paragraphs as new lines."""
    stack: list[tuple[int, bool]] = []
    ignorable = False
    skip_fallback = 0
    uc = 1  # characters after \uN that stand in for it (\ucN)
    out: list[str] = []
    for match in _RTF_TOKEN.finditer(rtf):
        word, arg, hexcode, symbol, brace, char = match.groups()
        if brace == "{":
            skip_fallback = 0
            stack.append((uc, ignorable))
        elif brace == "}":
            skip_fallback = 0
            if stack:
                uc, ignorable = stack.pop()
        elif symbol is not None:
            skip_fallback = 0
            if symbol == "*":
                ignorable = True
            elif not ignorable:
                out.append(_RTF_SYMBOLS.get(symbol, symbol if symbol in "{}\\" else ""))
        elif word is not None:
            skip_fallback = 0
            if word in _RTF_SKIP:
                ignorable = True
            elif ignorable:
                continue
            elif word in _RTF_SPECIAL:
                out.append(_RTF_SPECIAL[word])
            elif word == "uc":
                uc = int(arg or 1)
            elif word == "u" and arg is not None:
                code = int(arg)
                out.append(chr(code + 0x10000 if code < 0 else code) if -0x8000 <= code <= 0x10FFFF else "\ufffd")
                skip_fallback = uc
        elif hexcode is not None:
            if skip_fallback:
                skip_fallback -= 1
            elif not ignorable:
                out.append(bytes([int(hexcode, 16)]).decode("cp1252", errors="replace"))
        elif char is not None:
            if skip_fallback:
                skip_fallback -= 1
            elif not ignorable:
                out.append(char)
    return "".join(out)
