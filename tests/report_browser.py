"""Open a Snakemake report in headless Chromium, show every result item, screenshot each, and print the
text the summary pages show. Used by tests/workflow/test_workflow.py::test_report_renders_every_item and by hand:

    python tests/report_browser.py report.html shots/     # needs `pip install playwright` + a chromium

Why a real browser: the report is a JavaScript app; that the HTML file exists says nothing about whether
it renders. Chromium is taken from the system (PATH or $CHROMIUM); playwright's own download is not used.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def chromium_path() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _slug(*parts) -> str:
    return "_".join("".join(c if c.isalnum() else "-" for c in str(p)) for p in parts).strip("-_")


def capture(report: Path, out_dir: Path, categories=("Summary", "Figures", "Provenance", "Data (CSV)")) -> dict:
    """{category: [{"item": label, "screenshot": path, "text": visible text, "images": n}]}."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, list] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(report.resolve().as_uri())
        page.wait_for_timeout(1500)
        home = out_dir / "home.png"
        page.screenshot(path=str(home))
        for cat in categories:
            page.goto(report.resolve().as_uri())
            page.wait_for_timeout(800)
            page.get_by_text(cat, exact=True).first.click()
            page.wait_for_timeout(500)
            rows = page.locator("tr", has=page.locator("a[iconname='eye']"))
            items = []
            for i in range(rows.count()):
                row = rows.nth(i)
                label = " ".join(row.locator("td").nth(j).inner_text().strip()
                                 for j in range(row.locator("td").count() - 1))
                row.locator("a[iconname='eye']").click()
                page.wait_for_timeout(1200)
                shot = out_dir / f"{_slug(cat, label or i)}.png"
                page.screenshot(path=str(shot))
                frames = [f for f in page.frames if f != page.main_frame]
                text = "\n".join(f.inner_text("body") for f in frames if f.url or True) if frames else ""
                images = page.locator("img").count() + sum(f.locator("img").count() for f in frames)
                items.append({"item": label, "screenshot": str(shot), "text": text[:5000], "images": images})
                page.go_back()
                page.wait_for_timeout(600)
                if page.locator("tr", has=page.locator("a[iconname='eye']")).count() == 0:
                    page.goto(report.resolve().as_uri())
                    page.wait_for_timeout(800)
                    page.get_by_text(cat, exact=True).first.click()
                    page.wait_for_timeout(500)
            seen[cat] = items
        browser.close()
    return seen


if __name__ == "__main__":
    result = capture(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, indent=1, ensure_ascii=False))
