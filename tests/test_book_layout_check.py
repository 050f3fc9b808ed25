"""The browser check of the book's layout rules (tests/book_layout_check.py) fails where it should, on a page made here."""

from __future__ import annotations

import base64
import io
import shutil

import pytest
from book_layout_check import CHROMIUM, check_pages

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None and not __import__("os").path.exists(CHROMIUM), reason="needs chromium")


def _png(width: int, height: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


WIDE_ROW = "<tr>" + "".join(f"<td>value{i:03d}</td>" for i in range(60)) + "</tr>"


def _page(body: str) -> str:
    return (
        "<html><head><style>article.bd-article {width: 800px; margin: 0 40px} .scroll {overflow-x: auto}</style></head>"
        f"<body><main><article class='bd-article'>{body}</article></main></body></html>"
    )


def test_the_check_finds_each_defect_and_accepts_the_fixed_page(tmp_path):
    small, big = _png(600, 300), _png(2000, 600)
    bad = _page(
        f"<div class='cell tag_parameters'><div class='cell_input'><pre>x = 1</pre></div></div>"
        f"<div class='cell'><div class='cell_input'><pre>import pandas</pre></div>"
        f"<div class='cell_output'><div class='output text_html'><table>{WIDE_ROW}</table></div></div></div>"
        f"<div class='cell'><div class='cell_output'><img style='width: 800px' src='data:image/png;base64,{big}'></div></div>"
    )
    good = _page(
        f"<div class='cell tag_show-input'><div class='cell_input'><pre>by_hand = 1</pre></div>"
        f"<div class='cell_output'><div class='output text_html scroll'><table>{WIDE_ROW}</table></div></div></div>"
        f"<div class='cell tag_hide-input'><details><summary>Show code</summary><div class='cell_input'><pre>plumbing</pre></div></details></div>"
        f"<div class='cell'><div class='cell_output'><img style='max-width: 100%' src='data:image/png;base64,{small}'></div></div>"
    )
    (tmp_path / "bad.html").write_text(bad)
    (tmp_path / "good.html").write_text(good)
    problems = check_pages(tmp_path, ["bad", "good"])
    assert [p for p in problems if not p.startswith("bad: ")] == []
    kinds = sorted(p.split(": ", 1)[1].split(" (")[0].split(":")[0] for p in problems)
    assert any("parameters cell on the page" in p for p in problems)
    assert any("code shown by default without the show-input tag" in p and "import pandas" in p for p in problems)
    assert any("wider than its column" in p and "table" in p for p in problems)
    assert any("figure shown at 800 px, below half its natural 2000 px" in p for p in problems)
    assert len(problems) >= 4, kinds
