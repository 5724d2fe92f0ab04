"""The README's promises about corpus files, attacked: files that are empty in all but name, UTF-8 with a
damaged byte, a folder swapped for a symlink leading outside while the corpus is listed."""

from __future__ import annotations

import pytest

from tqa.loaders import SkipFile, extract

INVISIBLE = "\u200b\ufeff\u2060\u200d\u00ad\u200e\u2063\ufe0f"  # zero-width, BOM, joiners, soft hyphen, marks


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        pytest.param("a.txt", (INVISIBLE * 40).encode(), "empty file", id="txt-invisible"),
        pytest.param("a.md", ("\u200b \n\u3000\u00a0\ufeff\n" * 40).encode(), "empty file", id="md-invisible-spaces"),
        pytest.param(
            "a.html", b"<p>&#8203;&#xFEFF;&shy;</p><p>&nbsp;&zwj;</p>", "HTML has no readable text", id="html-invisible"
        ),
    ],
)
def test_files_of_invisible_characters_are_empty(source: str, data: bytes, reason: str) -> None:
    with pytest.raises(SkipFile) as info:
        extract(source, data)
    assert info.value.reason.startswith(reason)


def test_invisible_characters_around_text_are_not_empty() -> None:
    assert extract("a.txt", ("\u200bword\u200b").encode()).text == "\u200bword\u200b"


