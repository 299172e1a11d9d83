"""ransomeye_rotate_db_creds never shows other secrets of the .env files, and shows a diff only in diff mode.

The .env files hold more than the rotated password (SECRET_KEY, REDIS_PASSWORD,
tokens, broker URLs with passwords); before the fix every run returned the
whole files as ``diff``, so they reached ``-v`` output, ``register`` and AWX
job events.
"""
from __future__ import annotations

SECRETS = {
    "SECRET_KEY": "dj-secret-0a1b2c3d4e5f",
    "REDIS_PASSWORD": "redis-pw-9z8y7x",
    "API_TOKEN": "tok-5566778899",
    "AWS_SECRET_ACCESS_KEY": "aws+sec/ret==",
    "SIGNING_KEY": "sk-1122",
}
URL_SECRETS = {
    "CELERY_BROKER_URL": ("redis://:broker-pw-4455@127.0.0.1:6379/0", "broker-pw-4455"),
    "SENTRY_DSN": ("https://pubkey:sentry-sec-7788@sentry.example/1", "sentry-sec-7788"),
}


def _add_secrets(creds):
    for path in creds.env_files:
        with open(path, "a") as handle:
            for key, value in SECRETS.items():
                handle.write("%s=%s\n" % (key, value))
            for key, (value, _secret) in URL_SECRETS.items():
                handle.write("%s=%s\n" % (key, value))


def _leaks(text):
    values = list(SECRETS.values()) + [secret for _value, secret in URL_SECRETS.values()]
    return [value for value in values if value in text]


def test_no_diff_outside_diff_mode(creds, run_module_direct):
    _add_secrets(creds)
    check = run_module_direct("ransomeye_rotate_db_creds", creds.module_args(), check=True)
    assert check["_rc"] == 0 and check["changed"] is True, check
    assert "diff" not in check
    applied = run_module_direct("ransomeye_rotate_db_creds", creds.module_args())
    assert applied["rotated"] is True and "diff" not in applied
    assert _leaks(str(check)) == [] and _leaks(str(applied)) == []


def test_diff_mode_redacts_every_secret_looking_value(creds, run_module):
    _add_secrets(creds)
    old_password = creds.file_credentials()[1]
    check = run_module("ransomeye_rotate_db_creds", creds.module_args(), check=True, diff=True, verbosity=1)
    assert check["diff"], check
    for item in check["diff"]:
        for key in list(SECRETS) + list(URL_SECRETS):
            assert key in item["before"] and key in item["after"]  # the lines are still shown, redacted
    assert _leaks(check["_stdout"]) == [] and old_password not in check["_stdout"]
    applied = run_module("ransomeye_rotate_db_creds", creds.module_args(), diff=True, verbosity=1)
    new_password = creds.file_credentials()[1]
    assert applied["rotated"] is True
    assert _leaks(applied["_stdout"]) == []
    assert new_password not in applied["_stdout"] and old_password not in applied["_stdout"]
    # Non-secret lines are shown as they are.
    assert any("WORKERS=4" in item["after"] for item in applied["diff"])
