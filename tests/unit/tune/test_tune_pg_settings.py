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


def _setting(name, running, pending=None, context="postmaster", vartype="integer", unit="8kB", source="default"):
    return s.Setting(name=name, setting=running, unit=unit, vartype=vartype, context=context, enumvals=None,
                     pending=pending, pending_file="postgresql.auto.conf" if pending is not None else None,
                     pending_restart=False, source=source)


def test_plan_compares_with_pending_not_running():
    # shared_buffers written by ALTER SYSTEM (pending 256MB) but still 128MB running: no change, restart needed.
    settings = {"shared_buffers": _setting("shared_buffers", "16384", pending="256MB")}
    plan = s.plan_alter_system(settings, {"shared_buffers": "256MB"})
    assert plan.changes == {} and plan.restart_required is True and plan.reload_required is False


def test_plan_after_restart_needs_nothing():
    settings = {"shared_buffers": _setting("shared_buffers", "32768", pending="256MB")}
    plan = s.plan_alter_system(settings, {"shared_buffers": "256MB"})
    assert plan == s.Plan({}, False, False)


def test_plan_reloadable_change_and_pending_reload():
    settings = {"work_mem": _setting("work_mem", "4096", context="user", unit="kB")}
    plan = s.plan_alter_system(settings, {"work_mem": "8MB"})
    assert plan.changes == {"work_mem": {"before": "4096", "after": "8MB", "context": "user"}}
    assert plan.reload_required is True and plan.restart_required is False
    # written but not yet reloaded: nothing to write, a reload still needed
    settings = {"work_mem": _setting("work_mem", "4096", pending="8MB", context="user", unit="kB")}
    plan = s.plan_alter_system(settings, {"work_mem": "8MB"})
    assert plan.changes == {} and plan.reload_required is True


def test_plan_custom_parameter_known_only_from_files():
    settings = {"ransomeye.mode": _setting("ransomeye.mode", None, pending="fast", context="unknown", vartype="string",
                                           unit=None)}
    assert s.plan_alter_system(settings, {"ransomeye.mode": "fast"}).changes == {}
    assert s.plan_alter_system(settings, {"ransomeye.mode": "slow"}).changes["ransomeye.mode"]["before"] == "fast"


def test_command_line_settings_are_reported():
    settings = {"max_connections": _setting("max_connections", "100", context="postmaster", unit=None,
                                            source="command line")}
    assert s.overriding_sources(settings, {"max_connections": "200"}) == ["max_connections"]
    assert s.overriding_sources(settings, {"max_connections": "100"}) == []
