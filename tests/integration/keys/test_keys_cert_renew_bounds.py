"""ransomeye_cert_renew with hostile or mistaken option values: a clear failure, never a traceback, nothing changed."""
from __future__ import annotations

import pytest

from tests.harness.trees import tree_snapshot
from tests.integration.keys.test_keys_cert_renew import _args, tls  # noqa: F401 pylint: disable=unused-import


@pytest.mark.parametrize("extra,fragment", [
    (dict(valid_days=3000000, force=True), "valid_days must be between"),
    (dict(valid_days=0, force=True), "valid_days must be between"),
    (dict(renew_before=-5), "renew_before must be between"),
    (dict(renew_before=10 ** 9), "renew_before must be between"),
    (dict(key_type="rsa", key_size=10 ** 6, force=True), "key_size for RSA must be between"),
    (dict(subject_alt_names=["my host.example"], force=True), "not a valid DNS name"),
    (dict(subject_alt_names=["DNS:evil.example\nDNS:x"], force=True), "not a valid DNS name"),
    (dict(subject_alt_names=["DNS:"], force=True), "not a valid DNS name"),
    (dict(subject_alt_names=["DNS:" + "a" * 64 + ".example"], force=True), "not a valid DNS name"),
])
def test_out_of_range_options_fail_clearly_and_change_nothing(tls, run_module_direct, extra, fragment):
    directory = tls["dir"]
    before = tree_snapshot(directory)
    result = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], **extra))
    assert result.get("failed") is True, result
    assert fragment in result["msg"] and "Traceback" not in result["_stderr"], result
    assert tree_snapshot(directory) == before


def test_wildcard_and_ordinary_dns_names_are_still_accepted(tls, run_module_direct):
    result = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], force=True,
                                                             subject_alt_names=["*.ransomeye.example", "web-1.local",
                                                                                "IP:127.0.0.1"]), check=True)
    assert result["_rc"] == 0 and result["changed"] is True, result


def test_a_passphrase_for_an_unencrypted_key_gets_the_right_message(tls, run_module_direct):
    result = run_module_direct("ransomeye_cert_renew", _args(tls["server"], tls["ca"], ca_key_passphrase="oops",
                                                             force=True))
    assert result.get("failed") is True
    assert "is not encrypted" in result["msg"] and "give its passphrase" not in result["msg"], result
