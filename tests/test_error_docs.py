"""docs/errors.md lists every Twilio error the code knows, with the class the code gives it."""

from __future__ import annotations

import re
from pathlib import Path

from careflow.channels.twilio_error_table import BEGIN, END, markdown_table
from careflow.channels.twilio_errors import KNOWN_ERRORS

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def test_the_error_table_in_the_docs_matches_known_errors() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert table == markdown_table(), (
        "regenerate: python -m careflow.channels.twilio_error_table docs/errors.md"
    )
    rows = {
        int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| [^|]+ \| ([a-z-]+) \|", table, re.M)
    }
    assert rows == {code: str(known.cls) for code, known in KNOWN_ERRORS.items()}
