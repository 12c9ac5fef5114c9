"""A reader's check of the built book in a real browser: python tools/screenshots.py

Opens pages of ``_build/html`` in headless Chromium (Debian's ``chromium`` package), saves
a screenshot of each to ``_build/screenshots/`` and checks the rendered page (the DOM after
scripts ran): the math is typeset by MathJax, the figures are there and load, and on the
exercise pages the solutions are collapsed. Exits non-zero, naming the page, if a check fails.

The book loads MathJax from a CDN. To check it on a machine without that network, pass
``--mathjax DIR`` (the ``mathjax`` npm package, e.g. from ``npm install mathjax@3``): the
pages are then served from a temporary copy whose MathJax address points at ``DIR``.
The built book itself is not changed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([\w.-]+\.js)")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=15000",
]


def chromium(*args: str, profile: str) -> str:
    """Run headless Chromium with the course's flags; return its standard output."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        sys.exit("chromium not found: apt-get install chromium")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on a free loopback port; return the server and its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def local_copy(html: Path, mathjax: Path | None, into: Path) -> Path:
    """Copy the book to ``into``; with ``mathjax``, point every page's MathJax at a local copy."""
    site = into / "site"
    shutil.copytree(html, site)
    if mathjax is not None:
        shutil.copytree(mathjax / "es5", site / "_mathjax")
        for page in site.rglob("*.html"):
            depth = len(page.relative_to(site).parts) - 1
            text = CDN.sub(lambda m: "../" * depth + "_mathjax/" + m.group(1), page.read_text())
            page.write_text(text)
    return site


def check(name: str, dom: str, *, lesson: bool, exercises: bool) -> list[str]:
    """Problems seen in a rendered page's DOM (empty if none)."""
    problems = []
    if re.search(r'class="math[^"]*"[^>]*>\s*\\[\[(]', dom):
        problems.append("raw TeX left on the page (MathJax did not run)")
    if dom.count("<mjx-container") == 0:
        problems.append("no typeset math (mjx-container)")
    images = re.findall(r'<img[^>]+src="([^"]+)"', dom)
    if lesson and not any("_images/" in src for src in images):
        problems.append("no figure (<img src=_images/...>)")
    if exercises:
        details = re.findall(r"<details[^>]*>", dom)
        if not details:
            problems.append("solutions are not collapsible (<details>)")
        elif any(" open" in d for d in details):
            problems.append("a solution is open on load")
    return [f"{name}: {p}" for p in problems]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=Path("_build/html"))
    parser.add_argument("--out", type=Path, default=Path("_build/screenshots"))
    parser.add_argument("--mathjax", type=Path, help="the mathjax npm package, for offline checks")
    args = parser.parse_args()
    pages = sorted(p.relative_to(args.html).as_posix() for p in (args.html / "lessons").glob("*.html"))
    args.out.mkdir(parents=True, exist_ok=True)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        server, base = serve(local_copy(args.html, args.mathjax, Path(tmp)))
        try:
            for page in ["book/notation.html", *pages]:
                name = Path(page).stem
                profile = str(Path(tmp) / "profile")
                shot = (args.out / f"{name}.png").resolve()
                chromium("--window-size=1280,2400", f"--screenshot={shot}", f"{base}/{page}", profile=profile)
                dom = chromium("--dump-dom", f"{base}/{page}", profile=profile)
                exercises = name.endswith("_exercises")
                problems += check(name, dom, lesson=page.startswith("lessons/") and not exercises, exercises=exercises)
                print(f"{page}: {dom.count('<mjx-container')} formulas, screenshot {shot}")
        finally:
            server.shutdown()
    if problems:
        sys.exit("\n".join(problems))
    print(f"all {len(pages) + 1} pages render math, figures and collapsed solutions")


if __name__ == "__main__":
    main()
