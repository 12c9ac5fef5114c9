"""A reader's check of the built book in a real browser: python tools/screenshots.py

Opens pages of ``_build/html`` in headless Chromium (Debian's ``chromium`` package), saves
a screenshot of each to ``_build/screenshots/`` and checks the rendered page (the DOM after
scripts ran): the math is typeset by MathJax, the figures are there and load, and on the
exercise pages the solutions are collapsed. Exits non-zero, naming the page, if a check fails.

Interactive figures: on every page, each kernel-free twin (``ntk_lib.plotting.twin``) is
driven in the browser by a test script injected into the served copy: every slider is moved
through all its positions, and the displayed frame must change at every move and carry the
label of the slider values shown. A page fails if it still embeds an ipywidgets view (a dead
control in a static book) or shows progress-bar text. For two lessons with twins, screenshots
of the first twin at its first and last slider positions are saved as
``NAME-twin-first.png`` / ``NAME-twin-last.png``. Everything is served from the loopback.

The book loads MathJax from a CDN. To check it on a machine without that network, pass
``--mathjax DIR`` (the ``mathjax`` npm package, e.g. from ``npm install mathjax@3``): the
pages are then served from a temporary copy whose MathJax address points at ``DIR``.
The built book itself is not changed.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax@3/es5/([\w.-]+\.js)")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\|[^|<]*\||\d+(\.\d+)?(it/s|s/it)\]")
TWIN_REPORT = re.compile(r'<pre id="ntk-twin-report"[^>]*>(.*?)</pre>', re.S)
# Injected before </body> of every served page: drives every twin's sliders and writes what
# it saw into <pre id="ntk-twin-report">, which --dump-dom returns. With #twinpos=last in the
# address it leaves every slider at its last position and pins the first twin to the top of the window.
TWIN_TEST = """<script>
window.addEventListener("load", function () {
  var report = [];
  document.querySelectorAll("div.ntk-twin").forEach(function (root) {
    var sliders = root.querySelectorAll("input.ntk-twin-slider");
    var img = root.querySelector("img.ntk-twin-frame");
    var problems = [], seen = {}, moves = 0;
    function set(s, k) { s.value = k; s.dispatchEvent(new Event("input")); }
    sliders.forEach(function (s) { set(s, 0); });
    sliders.forEach(function (s) {
      var name = s.getAttribute("data-label");
      var before = img.src;
      for (var k = 0; k <= parseInt(s.max, 10); k++) {
        set(s, k);
        var value = s.parentNode.querySelector("output").textContent;
        var label = img.getAttribute("data-params");
        seen[img.src] = true;
        if (k > 0) {
          moves++;
          if (img.src === before) problems.push(name + " at position " + k + ": frame unchanged");
        }
        if (label.indexOf(name + " = " + value) < 0)
          problems.push(name + " at position " + k + ": frame labelled '" + label +
                        "', slider shows " + value);
        before = img.src;
      }
      set(s, 0);
    });
    report.push({id: root.id, sliders: sliders.length, moves: moves,
                 frames: Object.keys(seen).length, problems: problems});
  });
  if (location.hash.indexOf("twinpos=last") >= 0) {
    document.querySelectorAll("input.ntk-twin-slider").forEach(function (s) {
      s.value = s.max; s.dispatchEvent(new Event("input"));
    });
  }
  var first = document.querySelector("div.ntk-twin");
  if (first && location.hash.indexOf("twinpos=") >= 0) {
    // headless screenshots show the top of the page: pin the twin there
    first.style.cssText += "position:fixed;top:0;left:0;z-index:99999;background:white;" +
                           "padding:1em;max-width:900px";
  }
  var pre = document.createElement("pre");
  pre.id = "ntk-twin-report";
  pre.style.display = "none";
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
});
</script>"""
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
    """Copy the book to ``into`` with the twin test script injected into every page; with
    ``mathjax``, point every page's MathJax at a local copy."""
    site = into / "site"
    shutil.copytree(html, site)
    if mathjax is not None:
        shutil.copytree(mathjax / "es5", site / "_mathjax")
    for page in site.rglob("*.html"):
        prefix = "../" * (len(page.relative_to(site).parts) - 1) + "_mathjax/"
        text = page.read_text()
        if mathjax is not None:
            text = CDN.sub(lambda m, prefix=prefix: prefix + m.group(1), text)
        page.write_text(text.replace("</body>", TWIN_TEST + "</body>", 1))
    return site


def check_static(name: str, source: str) -> list[str]:
    """Problems in a page's HTML as built: dead widget views, progress-bar text."""
    problems = []
    if WIDGET_VIEW in source:
        problems.append("embeds an ipywidgets view (dead in the static book: tag its cell "
                        "remove-output and add a kernel-free twin)")
    found = PROGRESS.search(re.sub(r"<script.*?</script>", "", source, flags=re.S))
    if found:
        problems.append(f"shows progress-bar text {found.group(0)!r}")
    return [f"{name}: {p}" for p in problems]


def check_twins(name: str, dom: str) -> tuple[int, list[str]]:
    """The number of twins the test script drove on a page, and the problems it saw."""
    found = TWIN_REPORT.search(dom)
    if found is None:
        return 0, [f"{name}: the twin test script did not run"]
    report = json.loads(html.unescape(found.group(1)))
    problems = [f"{name}: twin {t['id']}: {p}" for t in report for p in t["problems"]]
    problems += [f"{name}: twin {t['id']} has no slider" for t in report if t["sliders"] == 0]
    return len(report), problems


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
    if exercises and any(" open" in d for d in re.findall(r"<details[^>]*>", dom)):
        problems.append("a folded cell is open on load")
    return [f"{name}: {p}" for p in problems]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=Path("_build/html"))
    parser.add_argument("--out", type=Path, default=Path("_build/screenshots"))
    parser.add_argument("--mathjax", type=Path, help="the mathjax npm package, for offline checks")
    args = parser.parse_args()
    parser.add_argument("--twin-shots", type=int, default=2,
                        help="lessons whose first twin is photographed at two slider positions")
    args = parser.parse_args()
    lessons = (args.html / "lessons").glob("*.html")
    pages = sorted(p.relative_to(args.html).as_posix() for p in lessons)
    args.out.mkdir(parents=True, exist_ok=True)
    problems, twins, photographed = [], 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        server, base = serve(local_copy(args.html, args.mathjax, Path(tmp)))
        try:
            for page in ["book/notation.html", *pages]:
                name = Path(page).stem
                profile = str(Path(tmp) / "profile")
                shot = (args.out / f"{name}.png").resolve()
                url = f"{base}/{page}"
                chromium("--window-size=1280,2400", f"--screenshot={shot}", url, profile=profile)
                dom = chromium("--dump-dom", url, profile=profile)
                exercises = name.endswith("_exercises")
                lesson = page.startswith("lessons/") and not exercises
                problems += check(name, dom, lesson=lesson, exercises=exercises)
                problems += check_static(name, (args.html / page).read_text())
                count, seen = check_twins(name, dom)
                problems += seen
                twins += count
                if count and photographed < args.twin_shots:
                    photographed += 1
                    for pos in ("first", "last"):
                        twin_shot = (args.out / f"{name}-twin-{pos}.png").resolve()
                        chromium("--window-size=1280,1100", f"--screenshot={twin_shot}",
                                 f"{url}#twinpos={pos}", profile=profile)
                print(f"{page}: {dom.count('<mjx-container')} formulas, {count} twins driven, "
                      f"screenshot {shot}")
        finally:
            server.shutdown()
    if problems:
        sys.exit("\n".join(problems))
    print(f"all {len(pages) + 1} pages render math and figures; {twins} twins respond to "
          "their sliders; no dead widget or progress bar")


if __name__ == "__main__":
    main()
