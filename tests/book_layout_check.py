"""The layout rules of a built page, measured in headless Chromium (used by tests/test_book.py).

A page passes when, at a 1400 x 2000 window (the width the book's screenshots were judged at):

1. **nothing is wider than its column unless it scrolls in its own box**: every table, code or
   text block and notebook output inside the article whose content is wider than the article
   column has an ancestor-or-self that scrolls sideways (``overflow-x: auto | scroll``) and
   itself fits in the column; nothing sticks out to the right of the column otherwise;
2. **no figure is shrunk below half its natural width** (its text would be unreadable);
3. **no plumbing code is shown by default**: no cell tagged ``parameters`` or
   ``injected-parameters`` is on the page, and every code cell whose source is visible without a
   click carries the ``show-input`` tag (the book's cell rule, :mod:`helpers.book.layout`).

Run it on a built book: ``python tests/book_layout_check.py _build/html``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = {"width": 1400, "height": 2000}

#: Returns a list of problems of the page, each one line.
MEASURE = r"""
() => {
  const problems = [];
  const column = document.querySelector("article.bd-article") || document.querySelector("main");
  const col = column.getBoundingClientRect();
  const describe = (el) => {
    const cell = el.closest(".cell");
    const where = cell ? `cell ${Array.from(document.querySelectorAll("main .cell")).indexOf(cell)}` : el.tagName.toLowerCase();
    const text = (el.innerText || el.getAttribute("src") || "").trim().split("\n")[0].slice(0, 60);
    return `${where} (${el.tagName.toLowerCase()}${el.className ? "." + String(el.className).split(" ")[0] : ""}: ${JSON.stringify(text)})`;
  };
  // folded (closed <details>, hidden) elements are not shown; Chromium keeps layout boxes for closed details
  const shown = (el) => (el.checkVisibility ? el.checkVisibility() : el.getClientRects().length > 0);
  const scrolls = (el) => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
  const wide = column.querySelectorAll("table, pre, .cell_output > .output, div.highlight, .math, mjx-container[display='true']");
  for (const el of wide) {
    if (!shown(el)) continue;  // folded away
    const r = el.getBoundingClientRect();
    let box = null;
    for (let a = el; a && a !== column.parentElement; a = a.parentElement) {
      if (scrolls(a)) { box = a; break; }
    }
    const inBox = box && box.getBoundingClientRect().right <= col.right + 1 && box.getBoundingClientRect().width <= col.width + 1;
    if (el.scrollWidth > col.width + 1 && !inBox) {
      problems.push(`wider than its column (${el.scrollWidth} px > ${Math.round(col.width)} px) without a scroll box: ${describe(el)}`);
    } else if (r.right > col.right + 1 && !inBox) {
      problems.push(`sticks out of its column by ${Math.round(r.right - col.right)} px: ${describe(el)}`);
    }
  }
  for (const img of column.querySelectorAll("img")) {
    if (!img.complete || !img.naturalWidth || !shown(img)) continue;
    const width = img.getBoundingClientRect().width;
    if (width < 0.5 * img.naturalWidth) {
      problems.push(`figure shown at ${Math.round(width)} px, below half its natural ${img.naturalWidth} px: ${describe(img)}`);
    }
  }
  for (const cell of column.querySelectorAll(".cell.tag_parameters, .cell.tag_injected-parameters")) {
    problems.push(`parameters cell on the page: ${describe(cell)}`);
  }
  for (const input of column.querySelectorAll(".cell .cell_input")) {
    const cell = input.closest(".cell");
    if (shown(input) && !cell.classList.contains("tag_show-input")) {
      problems.push(`code shown by default without the show-input tag: ${describe(input)}`);
    }
  }
  return problems;
}
"""


def check_pages(html: Path, docs: list[str]) -> list[str]:
    """Problems of every page ``html/DOC.html`` of ``docs``, each as ``"DOC: problem"``."""
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport=WINDOW)
        for doc in docs:
            path = (Path(html) / f"{doc}.html").resolve()
            if not path.exists():
                problems.append(f"{doc}: page missing")
                continue
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            page.wait_for_timeout(300)  # MathJax typesets after load
            problems += [f"{doc}: {p}" for p in page.evaluate(MEASURE)]
        browser.close()
    return problems


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    pages = sys.argv[2:] or sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.glob("book/*.html"))
    found = check_pages(folder, pages)
    print("\n".join(found) if found else f"{len(pages)} pages: no layout problem")
    sys.exit(1 if found else 0)
