"""The console's files: vendored ones match their pinned hash, and no template carries inline script or style
(the CSP would block them)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[3] / "gateway" / "console"


def test_vendored_files_match_their_pinned_hashes():
    table = (CONSOLE / "static" / "VENDORED.md").read_text()
    pinned = re.findall(r"^\| (\S+) \|.*\| ([0-9a-f]{64}) \|$", table, re.MULTILINE)
    assert pinned
    for name, digest in pinned:
        assert hashlib.sha256((CONSOLE / "static" / name).read_bytes()).hexdigest() == digest, name


def test_templates_have_no_inline_script_or_style():
    for path in (CONSOLE / "templates").glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert "<style" not in text, path.name
        assert not re.search(r"\sstyle=", text), path.name
        assert not re.search(r"\son[a-z]+=", text), path.name
