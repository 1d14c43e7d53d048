"""Open a report in headless Chromium: check that it renders, or take a screenshot.

Chromium runs offline and throw-away: its own temporary profile, no network services (no QUIC,
background networking, component updates or sync), no sandbox (it runs as root in containers and
CI). Console messages go to stderr (``--enable-logging=stderr``), where every ``console.*`` call
and every uncaught error appears as a ``CONSOLE`` line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError

#: Executable names tried, in order (Debian's package is ``chromium``).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", "--mute-audio")
_CONSOLE = re.compile(r":CONSOLE[:(]")


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) executable on ``PATH``, or ``None``."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    exe = find_chromium()
    if exe is None:
        raise BuildError("no Chromium found on PATH (tried " + ", ".join(CHROMIUM_NAMES) + "); install it, e.g. "
                         "'apt-get install -y chromium'")
    with tempfile.TemporaryDirectory(prefix="split4ml-chromium-") as profile:
        cmd = [exe, *_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"Chromium did not finish within {timeout_s:g} s: {' '.join(cmd)}") from exc


@dataclass(frozen=True)
class PageCheck:
    """What headless Chromium saw of a report page.

    Attributes:
        images: number of ``<img>`` elements (as recorded by the page's own check script).
        images_loaded: images that decoded (``complete`` and ``naturalWidth > 0``).
        console: console messages and uncaught errors, one per line (empty for a clean page).
        dom: the page's DOM after load.
    """

    images: int
    images_loaded: int
    console: tuple[str, ...]
    dom: str

    @property
    def ok(self) -> bool:
        """Every image loaded, there is at least one, and the console is silent."""
        return self.images > 0 and self.images_loaded == self.images and not self.console


def check_page(html_file: str | Path, timeout_s: float = 120.0) -> PageCheck:
    """Load ``html_file`` in headless Chromium and read back the page's image check and console.

    Raises :class:`BuildError` when Chromium is missing or fails, or the page recorded no check
    (a page not made by :func:`split4ml.report.render_html`, or one whose script did not run).
    """
    url = Path(html_file).resolve().as_uri()
    res = _run(["--enable-logging=stderr", "--v=0", "--dump-dom", url], timeout_s)
    if res.returncode != 0:
        raise BuildError(f"Chromium failed on {html_file} (exit {res.returncode}): {res.stderr[-2000:]}")
    body = re.search(r"<body\b[^>]*>", res.stdout)
    tag = body.group(0) if body else ""
    n = re.search(r'data-images="(\d+)"', tag)
    ok = re.search(r'data-images-loaded="(\d+)"', tag)
    if n is None or ok is None:
        raise BuildError(f"{html_file}: the page recorded no image check after load (body tag: {tag[:200]!r})")
    console = tuple(line for line in res.stderr.splitlines() if _CONSOLE.search(line))
    return PageCheck(int(n.group(1)), int(ok.group(1)), console, res.stdout)


def screenshot(html_file: str | Path, png_file: str | Path, width: int = 1280, height: int = 1600,
               scale: float = 1.0, timeout_s: float = 120.0) -> Path:
    """A PNG screenshot of the top ``width`` x ``height`` CSS pixels of ``html_file`` (``scale``
    device pixels per CSS pixel)."""
    out = Path(png_file).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    res = _run([f"--window-size={width},{height}", f"--force-device-scale-factor={scale:g}",
                f"--screenshot={out}", Path(html_file).resolve().as_uri()], timeout_s)
    if res.returncode != 0 or not out.is_file():
        raise BuildError(f"Chromium could not screenshot {html_file} (exit {res.returncode}): {res.stderr[-2000:]}")
    return out
