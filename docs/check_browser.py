"""Open the built docs in headless Chromium and check what a reader would see.

For the index and one API page: every formula was typeset by the bundled MathJax (no raw
``\\(``…``\\)`` or ``\\[``…``\\]`` left in the text, ``mjx-container`` elements present, no MathJax
error), and no asset failed to load. The pages are served from a local HTTP server on
127.0.0.1 that records every request, so a missing file is a 404 in its log; Chromium resolves
no other host (``--host-resolver-rules``), so a CDN reference fails and is reported from the
browser's console log and from the DOM. A screenshot of each page is kept under
``<build>/browser-check/``.

Usage: ``python docs/check_browser.py [BUILD_DIR]`` (default ``docs/_build/html``); exit
status 0 when every check passes. Needs ``chromium`` on PATH (Debian: ``apt-get install -y
chromium``); ``make docs-check`` installs it when missing.
"""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

PAGES = ("index.html", "api/infer.html")
# virtual time for MathJax to load its fonts and typeset (virtual: fast when idle)
TYPESET_BUDGET_MS = 20000
CHROMIUM_TIMEOUT_S = 90


class _LoggingHandler(SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        self.server.requests.append((self.path.split("?")[0], int(code)))

    def log_message(self, format, *args):  # keep the server quiet
        pass


def _serve(root: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_LoggingHandler, directory=root)
    )
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_browser: no chromium on PATH (apt-get install -y chromium)")


def _run_chromium(url: str, extra: list[str], profile: str) -> tuple[str, str]:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--virtual-time-budget={TYPESET_BUDGET_MS}",
        *extra,
        url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    return done.stdout, done.stderr


def _text(dom: str) -> str:
    """Visible text of the page body, without scripts, styles and MathJax's own output."""
    body = re.sub(r"(?s)<(script|style|mjx-container)\b.*?</\1>", " ", dom)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", body))


def _external_assets(dom: str) -> list[str]:
    """src/href of scripts, stylesheets, images and fonts that point off this machine."""
    found = []
    for tag in re.finditer(r"(?s)<(script|link|img|iframe|source)\b[^>]*>", dom):
        for url in re.findall(r'(?:src|href)="([^"]+)"', tag.group(0)):
            if re.match(r"(https?:)?//", url) and not re.match(r"(https?:)?//127\.0\.0\.1", url):
                found.append(url)
    return found


def check_page(base: str, page: str, shots: str, profile: str) -> list[str]:
    """Problems found on one page (empty when it passed)."""
    url = f"{base}/{page}"
    dom, log = _run_chromium(url, ["--dump-dom"], profile)
    problems = []
    if "<body" not in dom:
        return [f"{page}: Chromium returned no DOM ({log[-500:]})"]
    formulas = len(re.findall(r"<mjx-container\b", dom))
    if formulas == 0:
        problems.append(f"{page}: no typeset formula (no mjx-container)")
    if "<mjx-merror" in dom:
        problems.append(f"{page}: MathJax reported a TeX error (mjx-merror)")
    text = _text(dom)
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
        if opener in text and closer in text:
            at = text.index(opener)
            problems.append(f"{page}: raw formula left: {text[at : at + 60]!r}")
    problems += [f"{page}: asset off this machine: {u}" for u in _external_assets(dom)]
    for line in log.splitlines():
        if "Failed to load resource" in line or "Uncaught" in line:
            problems.append(f"{page}: browser console: {line.strip()[-200:]}")
    shot = os.path.join(shots, page.replace("/", "_").replace(".html", ".png"))
    _run_chromium(url, [f"--screenshot={shot}", "--window-size=1440,1800"], profile)
    if not os.path.exists(shot) or os.path.getsize(shot) == 0:
        problems.append(f"{page}: no screenshot written")
    print(f"{page}: {formulas} formulas typeset; screenshot {shot}")
    return problems


def main(build: str) -> int:
    build = os.path.abspath(build)
    if not os.path.exists(os.path.join(build, "index.html")):
        print(f"check_browser: no {build}/index.html; run `make docs` first", file=sys.stderr)
        return 2
    shots = os.path.join(build, "browser-check")
    os.makedirs(shots, exist_ok=True)
    server = _serve(build)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        for page in PAGES:
            problems += check_page(base, page, shots, profile)
    server.shutdown()
    requests = server.requests
    failed = [(path, code) for path, code in requests if code >= 400 and path != "/favicon.ico"]
    problems += [f"asset failed to load: {path} (HTTP {code})" for path, code in failed]
    fonts = [path for path, code in requests if code == 200 and "/mathjax/" in path]
    if not any(path.endswith(".woff") for path in fonts):
        problems.append("MathJax loaded no font file from _static/mathjax")
    print(f"{len(requests)} requests served, {len(failed)} failed, {len(fonts)} MathJax files")
    for problem in problems:
        print("FAIL", problem)
    print("browser check:", "passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html"))
