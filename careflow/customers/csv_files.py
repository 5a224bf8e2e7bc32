"""The text of an uploaded or named CSV file, whatever Excel saved it as, and how it was read.

Excel saves "CSV UTF-8" with a byte order mark, plain "CSV" in the computer's legacy code page
(GBK on a Chinese Windows, cp1252 on a Western one) and "Unicode text" as tab-separated UTF-16.
Byte order marks and strict UTF-8 are certain; anything else is detected by charset-normalizer,
which is told first about the code page Excel uses in the center's country: a short GBK file
alone is as plausible Korean as Chinese. The caller says which encoding was used, so a wrong
guess is visible and ``--encoding`` can overrule it.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from charset_normalizer import from_bytes

from careflow.errors import ImportDataError

# The code page a Windows Excel of the country saves plain "CSV" in; GB18030 includes GBK.
_EXCEL_CODE_PAGE = {
    "CN": "gb18030",
    "SG": "gb18030",
    "HK": "big5hkscs",
    "MO": "big5hkscs",
    "TW": "cp950",
    "JP": "cp932",
    "KR": "cp949",
}
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)
_SAVE_AS = "save it as 'CSV UTF-8' or name its encoding with --encoding"
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon"}


@dataclass(frozen=True)
class CsvText:
    text: str
    encoding: str  # as people call it: UTF-8, UTF-16, GB18030, CP1252
    detected: bool  # False when the caller named the encoding

    def describe(self, name: str) -> str:
        """``read customers.csv as GB18030 (detected)``."""
        return f"read {name} as {self.encoding} ({'detected' if self.detected else 'as given'})"


def _label(codec: str) -> str:
    name = codecs.lookup(codec).name
    return "UTF-8" if name == "utf-8-sig" else name.upper()


def _binary_workbook(data: bytes) -> str | None:
    if data.startswith(b"PK\x03\x04"):
        return "an Excel workbook (.xlsx), not CSV"
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "an Excel 97-2003 workbook (.xls), not CSV"
    return None


def decode_csv(data: bytes, name: str, *, encoding: str | None = None, country: str | None = None) -> CsvText:
    """The file's text; ImportDataError naming the file when it is not text careflow can read."""
    workbook = _binary_workbook(data)
    if workbook:
        raise ImportDataError([f"{name}: {workbook}; in Excel choose File > Save As > 'CSV UTF-8'"])
    if encoding is not None:
        hint = "leave out --encoding to have it detected"
        return CsvText(_decode_as(data, name, encoding, hint), _known(encoding, name), detected=False)
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            return CsvText(_decode_as(data, name, codec), label, detected=True)
    try:
        return CsvText(data.decode("utf-8"), "UTF-8", detected=True)
    except UnicodeDecodeError:
        pass
    legacy = _EXCEL_CODE_PAGE.get(country or "")
    match = from_bytes(data, cp_isolation=[legacy]).best() if legacy else None
    match = match or from_bytes(data).best()
    if match is None:
        raise ImportDataError([f"{name}: cannot tell which text encoding this file is in; {_SAVE_AS}"])
    # GBK and GB2312 files are GB18030 files: decode with the superset, whichever was guessed.
    codec = "gb18030" if codecs.lookup(match.encoding).name in ("gbk", "gb2312") else match.encoding
    return CsvText(_decode_as(data, name, codec), _label(codec), detected=True)


def _known(encoding: str, name: str) -> str:
    try:
        return _label(encoding)
    except LookupError:
        raise ImportDataError(
            [f"{name}: unknown encoding {encoding!r}; e.g. utf-8, gb18030, utf-16, cp1252"]
        ) from None


def _decode_as(data: bytes, name: str, encoding: str, hint: str = _SAVE_AS) -> str:
    _known(encoding, name)
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise ImportDataError(
            [f"{name}: line {line} is not {_label(encoding)} text (byte {exc.start + 1:,}); {hint}"]
        ) from None


def sniff_delimiter(text: str, columns: Iterable[str]) -> str:
    """The delimiter that splits the header line into the most known column names (comma on a tie)."""
    first = text.split("\n", 1)[0]
    known = set(columns)
    best, best_count = ",", -1
    for delimiter in DELIMITERS:
        cells = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
        count = sum(cell.strip() in known for cell in cells)
        if count > best_count:
            best, best_count = delimiter, count
    return best
