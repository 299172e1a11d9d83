"""docs/THREAT_MODEL.md names a test for every guarantee: each named test must exist.

A guarantee whose test was renamed or removed would silently become a claim
nothing holds; this test turns that into a failure.
"""
from __future__ import annotations

import os
import re

from tests.harness.paths import REPO

DOC = os.path.join(REPO, "docs", "THREAT_MODEL.md")
REF = re.compile(r"`(tests/[\w/.-]+\.py)(?:::(\w+))?`")


def _refs():
    with open(DOC, encoding="utf-8") as handle:
        return REF.findall(handle.read())


def test_every_test_the_threat_model_names_exists():
    refs = _refs()
    assert len(refs) >= 10
    missing = []
    for path, name in refs:
        full = os.path.join(REPO, path)
        if not os.path.isfile(full):
            missing.append(path)
            continue
        if name:
            with open(full, encoding="utf-8") as handle:
                if not re.search(r"^(?:async )?def %s\(" % re.escape(name), handle.read(), re.M):
                    missing.append("%s::%s" % (path, name))
    assert missing == []


def test_the_attacker_r_table_markers_are_present_once():
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    assert text.count("<!-- BEGIN attacker-R table -->") == 1
    assert text.count("<!-- END attacker-R table -->") == 1
    assert text.index("<!-- BEGIN attacker-R table -->") < text.index("<!-- END attacker-R table -->")


def test_readme_links_the_threat_model():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert "## Security model" in text and "docs/THREAT_MODEL.md" in text
