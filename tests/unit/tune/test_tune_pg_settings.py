"""Setting normalisation and the conf.d include file format."""
from __future__ import annotations

import pytest

from ansible_collections.ransomeye.ops.plugins.module_utils import _pg_settings as s
from ansible_collections.ransomeye.ops.plugins.module_utils._errors import RansomeyeError


@pytest.mark.parametrize("a,b,vartype,unit", [
    ("256MB", "32768", "integer", "8kB"), ("256MB", "262144kB", "integer", "8kB"), ("4GB", "4096MB", "integer", "kB"),
    ("19418kB", "19418", "integer", "kB"), ("on", "true", "bool", None), ("off", "0", "bool", None),
    ("1.1", "1.10", "real", None), ("LZ4", "lz4", "enum", None), ("1min", "60s", "integer", "s"), ("16MB", "2048", "integer", "8kB"),
])
def test_equal_values_normalise_equal(a, b, vartype, unit):
    assert s.normalise(a, vartype, unit) == s.normalise(b, vartype, unit)


@pytest.mark.parametrize("a,b,vartype,unit", [("256MB", "128MB", "integer", "8kB"), ("on", "off", "bool", None),
                                              ("1.1", "4", "real", None), ("a", "b", "string", None)])
def test_different_values_normalise_different(a, b, vartype, unit):
    assert s.normalise(a, vartype, unit) != s.normalise(b, vartype, unit)


@pytest.mark.parametrize("name", ["shared_buffers", "auto_explain.log_min_duration"])
def test_valid_names(name):
    assert s.check_name(name) == name


@pytest.mark.parametrize("name", ["shared buffers", "x;DROP", "\"quoted\"", "", "1abc"])
def test_invalid_names_are_refused(name):
    with pytest.raises(RansomeyeError):
        s.check_name(name)


def test_conf_roundtrip_quotes_unsafe_values():
    settings = {"shared_buffers": "4GB", "random_page_cost": "1.1", "log_line_prefix": "%m [%p] it's # here \\ too"}
    text = s.render_conf(settings, ["header line"], {"shared_buffers": "RAM / 4"})
    assert "shared_buffers = 4GB\n" in text
    assert "# RAM / 4\n" in text
    assert text.startswith("# header line\n")
    assert s.parse_conf(text) == settings
