"""Diff mode of ransomeye_rotate_db_creds shows the changed lines with both passwords redacted."""
from __future__ import annotations

from ansible_collections.ransomeye.ops.plugins.module_utils._db_creds import CURRENT_PLACEHOLDER, NEW_PLACEHOLDER


def test_diff_names_every_file_and_never_a_password(creds, run_module):
    old_password = creds.file_credentials()[1]
    before = creds.snapshot()
    check = run_module("ransomeye_rotate_db_creds", creds.module_args(), check=True, diff=True)
    assert creds.snapshot() == before
    assert sorted(d["before_header"] for d in check["diff"]) == sorted(creds.env_files)
    for item in check["diff"]:
        assert CURRENT_PLACEHOLDER in item["before"] and NEW_PLACEHOLDER in item["after"]
        assert item["before"].replace(CURRENT_PLACEHOLDER, NEW_PLACEHOLDER) == item["after"]
    assert old_password not in check["_stdout"]
    assert "NEW-PASSWORD-REDACTED" in check["_stdout"]  # the controller printed the diff

    applied = run_module("ransomeye_rotate_db_creds", creds.module_args(), diff=True)
    new_password = creds.file_credentials()[1]
    assert applied["rotated"] is True
    assert new_password not in applied["_stdout"] and old_password not in applied["_stdout"]
    # The redacted "after" is the file now on disk, with the new password where the placeholder stands.
    on_disk = {path: open(path).read() for path in creds.env_files}
    for item in applied["diff"]:
        assert item["after"].replace(NEW_PLACEHOLDER, new_password) == on_disk[item["after_header"]]
