"""Render an HTML report in headless Chromium and check that it looks like a page, not a blank or broken one."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from perflab.errors import ConfigError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 1600) -> Path:
    """Take a screenshot of a local HTML file; needs Debian's ``chromium`` package."""
    browser = find_chromium()
    if browser is None:
        raise ConfigError("no headless browser found: install chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=60)
    return png


@dataclass(frozen=True)
class PageLook:
    """What a screenshot shows: its size, how much of it is ink, and whether it has colour (charts, banner)."""

    width: int
    height: int
    ink: float
    coloured: float

    @property
    def looks_right(self) -> bool:
        return self.ink > 0.005 and self.coloured > 0.0003


def inspect(png: Path) -> PageLook:
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    ink = float((img.sum(axis=2) < 600).mean())
    coloured = float((img.max(axis=2) - img.min(axis=2) > 40).mean())
    return PageLook(img.shape[1], img.shape[0], ink, coloured)
