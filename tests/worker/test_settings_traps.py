"""Settings that used to be traps: a misspelt name silently ignored, lists and maps that only took JSON (exit 70
otherwise), a webhook secret that could never sign (a job claimed forever), a Redis URL parameter that ended in a
KeyError. Each is one line and exit 2 at start now, or works."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from schemas import ErrorCode, parse_result
from schemas.transport import DEAD_LETTER_KEY, RESULT_KEY, WEBHOOK_CLAIMED_KEY, redis_url_problem
from tests.schemas.test_webhook_signatures import SECRET
from worker.delivery.egress import EgressPolicy
from worker.delivery.webhook_jobs import Scheduler, WebhookDeliverer, WebhookJob
from worker.delivery.webhooks import RetryPolicy, WebhookHttp
from worker.errors import ConfigError
from worker.settings import EnvForms, Settings, check_environment, known_env_names, load_settings

ROOT = Path(__file__).resolve().parents[2]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.upper().startswith("LABELQ_")}


def run(*command: str, timeout_s: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """A command in a child process whose LABELQ_* environment is exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", *command],
        env={**CLEAN_ENV, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
    )


def one_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refusal (no traceback), its exit code checked."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> typing.Callable[..., None]:
    """Set LABELQ_* variables for load_settings() in this process (others removed for the test)."""
    for name in list(os.environ):
        if name.upper().startswith("LABELQ_"):
            monkeypatch.delenv(name)

    def put(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return put


# 1. unknown LABELQ_* names


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("LABELQ_REDIS_ULR", "LABELQ_REDIS_URL"), ("LABELQ_REALTIME_MAX_WAIT", "LABELQ_REALTIME_MAX_WAIT_MS")],
)
def test_a_misspelt_name_is_refused_with_the_nearest_known_one(typed: str, meant: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_environment({typed: "50", "LABELQ_MODEL": "fake", "PATH": "/bin"})
    assert f"{typed} (did you mean {meant}?)" in str(refused.value)
    check_environment({meant: "50", "LABELQ_DEBUG": "1", "LABELQ_SUPERVISED": "1", "OTHER_ULR": "x"})


def test_every_labelq_name_the_code_reads_is_known() -> None:
    """LABELQ_* names written in the code (os.environ reads, click envvars, the compose file) are settings or
    listed in worker.settings.OTHER_ENV: a name read elsewhere is never reported as unknown."""
    sources = [*ROOT.glob("labelq/**/*.py"), *ROOT.glob("worker/**/*.py"), *ROOT.glob("producer/**/*.py")]
    sources += [ROOT / "docker-compose.yml", ROOT / "Dockerfile"]
    read = {
        name
        for path in sources
        if path.exists()
        for name in re.findall(r"\bLABELQ_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert read and read <= known_env_names(), read - known_env_names()


def test_commands_and_workers_refuse_a_misspelt_name_at_start() -> None:
    env = {"LABELQ_REDIS_ULR": "redis://elsewhere:6379/0"}
    for command in (
        ("labelq.cli", "health"),
        ("labelq.cli", "worker"),
        ("labelq.cli", "webhook-worker"),
        ("celery", "-A", "worker.celery_app", "worker"),
    ):
        line = one_line(run(*command, **env))
        assert "unknown setting LABELQ_REDIS_ULR (did you mean LABELQ_REDIS_URL?)" in line, command
    helped = run("labelq.cli", "health", "--help", **env)  # help still shows
    assert helped.returncode == 0 and "Usage:" in helped.stdout


# 2. lists and maps in the forms people type

LIST_FIELDS = {
    name: info
    for name, info in Settings.model_fields.items()
    if typing.get_origin(info.annotation) in (tuple, list, dict)
}


def test_every_list_and_map_setting_takes_plain_forms() -> None:
    assert set(LIST_FIELDS) >= {"webhook_private_hosts", "webhook_retry_delays_s", "webhook_secrets"}
    missing = [name for name, info in LIST_FIELDS.items() if not any(isinstance(m, EnvForms) for m in info.metadata)]
    assert not missing, f"list/map settings without plain forms (use StrList, FloatList, AnyMap...): {missing}"


PLAIN_AND_JSON = {
    "providers": ("CUDAExecutionProvider, CPUExecutionProvider", '["CUDAExecutionProvider", "CPUExecutionProvider"]'),
    "reply_queue_prefixes": ("tenant-a.,tenant-b.", '["tenant-a.", "tenant-b."]'),
    "celery_imports": ("json", '["json"]'),
    "webhook_allowed_hosts": ("hooks.example.com,*.example.org", '["hooks.example.com", "*.example.org"]'),
    "webhook_private_hosts": ("127.0.0.1", '["127.0.0.1"]'),
    "webhook_retry_delays_s": ("1,1", "[1, 1]"),
    "redis_transport_options": ("master_name=mymaster,visibility_timeout=30", '{"master_name": "mymaster", '
                                '"visibility_timeout": 30}'),
    "webhook_secrets": (f"default={SECRET},other={SECRET}", json.dumps({"default": SECRET, "other": SECRET})),
    "redis_shards": ("redis://a:6379/0, redis://b:6379/0", '["redis://a:6379/0", "redis://b:6379/0"]'),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LIST_FIELDS))
def test_plain_and_json_forms_read_the_same(name: str, environ: typing.Callable[..., None]) -> None:
    plain, as_json = PLAIN_AND_JSON[name]  # a new list or map setting gets a row here
    variable = f"LABELQ_{name.upper()}"
    environ(**{variable: plain})
    from_plain = getattr(load_settings(), name)
    environ(**{variable: as_json})
    from_json = getattr(load_settings(), name)
    environ(**{variable: ""})
    assert from_plain == from_json and from_plain and not getattr(load_settings(), name)


def test_plain_forms_have_the_values_people_mean(environ: typing.Callable[..., None]) -> None:
    environ(
        LABELQ_WEBHOOK_PRIVATE_HOSTS="127.0.0.1",
        LABELQ_WEBHOOK_RETRY_DELAYS_S="1,1",
        LABELQ_REDIS_TRANSPORT_OPTIONS="master_name=mymaster,visibility_timeout=30,retry_on_timeout=true",
        LABELQ_WEBHOOK_SECRETS=f"default={SECRET}",  # base64's '=' padding stays in the value
    )
    settings = load_settings()
    assert settings.webhook_private_hosts == ("127.0.0.1",)
    assert settings.webhook_retry_delays_s == (1.0, 1.0)
    assert settings.redis_transport_options == {
        "master_name": "mymaster",
        "visibility_timeout": 30,
        "retry_on_timeout": True,
    }
    assert settings.webhook_secrets["default"].get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("LABELQ_WEBHOOK_RETRY_DELAYS_S", "1,soon", "(item 2): Input should be a valid number"),
        ("LABELQ_WEBHOOK_RETRY_DELAYS_S", "[1, 2", "not valid JSON"),
        ("LABELQ_WEBHOOK_PRIVATE_HOSTS", '{"a": 1}', None),  # JSON, but a map: neither form of a list
        ("LABELQ_REDIS_TRANSPORT_OPTIONS", "mymaster", "item 1 is not name=value"),
        ("LABELQ_REDIS_TRANSPORT_OPTIONS", '{"master_name": ', "not valid JSON"),
        ("LABELQ_WEBHOOK_SECRETS", SECRET, "item 1 is not name=value"),
    ],
)
def test_other_forms_are_refused_naming_the_variable_and_the_forms(
    variable: str, value: str, said: str | None, environ: typing.Callable[..., None]
) -> None:
    environ(**{variable: value})
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(f"invalid {variable}") and "\n" not in message, message
    assert said is None or said in message
    assert "comma" in message and "JSON" in message, message  # the forms it takes
    assert SECRET not in message


def test_a_list_in_a_plain_form_is_read_by_a_command() -> None:
    done = run(
        "labelq.cli", "health", LABELQ_WEBHOOK_PRIVATE_HOSTS="127.0.0.1", LABELQ_REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert done.returncode == 3, done.stderr  # got past the settings: Redis unreachable (nothing on port 1)
    line = one_line(run("labelq.cli", "health", LABELQ_WEBHOOK_RETRY_DELAYS_S="1,soon"))
    assert "LABELQ_WEBHOOK_RETRY_DELAYS_S" in line and "internal error" not in line


# 3. webhook secrets


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        ("hunter2", "does not start with 'whsec_'"),
        ("whsec_not base64!", "is not 'whsec_' followed by base64"),
        ("whsec_abc", "is not 'whsec_' followed by base64"),  # padding missing
        ("whsec_", "has no key bytes"),
    ],
)
def test_a_secret_that_cannot_sign_is_refused_at_start_naming_the_setting_not_the_secret(
    secret: str, said: str, environ: typing.Callable[..., None]
) -> None:
    environ(LABELQ_WEBHOOK_SECRETS=json.dumps({"default": SECRET, "billing": secret}))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("invalid LABELQ_WEBHOOK_SECRETS") and "'billing'" in message and said in message
    assert secret.removeprefix("whsec_") not in message or not secret.removeprefix("whsec_")


def test_both_workers_refuse_a_bad_secret_at_start() -> None:
    env = {"LABELQ_WEBHOOK_SECRETS": "default=whsec_hunter2!!"}
    for command in (("labelq.cli", "worker"), ("labelq.cli", "webhook-worker")):
        line = one_line(run(*command, **env))
        assert "LABELQ_WEBHOOK_SECRETS" in line and "hunter2" not in line


def test_a_delivery_that_cannot_be_signed_is_a_dead_letter_not_a_retry(redis_url: str) -> None:
    """A secret that reaches delivery unusable (the webhook worker's own settings check it at start; a deliverer
    built in code may hold anything) is a dead letter at once: the claim is dropped, nothing is sent."""
    sent: list[httpx.Request] = []
    http = WebhookHttp(transport=httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200)))
    client = redis_lib.Redis.from_url(redis_url)
    deliverer = WebhookDeliverer(
        client,
        http,
        egress=EgressPolicy(resolver=lambda host, port: ["93.184.216.34"]),
        retry=RetryPolicy(delays_s=(1.0, 1.0)),
        secrets={"default": "whsec_not base64!"},
        timeout_s=1.0,
        result_ttl_s=60,
    )
    try:
        pipe = client.pipeline()
        job = WebhookJob(request_id="r1", url="https://hooks.example.com/h", body='{"status": "ok", "id": "r1"}')
        Scheduler(client).schedule(pipe, job, time.time() - 1)
        pipe.execute()
        [claimed] = Scheduler(client).claim_due(time.time(), limit=10, claim_s=30)
        attempt = deliverer.run(claimed)
    finally:
        http.close()
    assert attempt.outcome == "give_up" and attempt.error and attempt.error.startswith("webhook_secret_invalid")
    assert not sent and client.zcard(WEBHOOK_CLAIMED_KEY) == 0 and Scheduler(client).pending() == (0, 0)
    [letter] = [json.loads(item) for item in client.lrange(DEAD_LETTER_KEY, 0, -1)]
    assert letter["reason"] == "webhook_secret_invalid" and "not base64!" not in json.dumps(letter)
    stored = parse_result(client.get(RESULT_KEY + "r1") or b"")
    assert getattr(stored, "code", None) == ErrorCode.WEBHOOK_REFUSED


# 4. Redis URL parameters


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("rediss://h:6380/0?ssl_cert_reqs=bogus", "ssl_cert_reqs must be one of none, optional, required"),
        ("redis://h:6379/0?ssl_cert_reqs=required", "ssl_cert_reqs applies to TLS"),
        ("redis://h:6379/0?socket_timeout=soon", "socket_timeout is not accepted"),
        ("rediss://h:6380/0?ssl_check_hostname=maybe", "ssl_check_hostname must be true or false"),
        ("redis://h:6379/0?sockettimeout=1", "URL parameter sockettimeout is not accepted"),
    ],
)
def test_a_url_parameter_that_cannot_work_is_named(url: str, said: str) -> None:
    problem = redis_url_problem(url)
    assert problem and said in problem


def test_url_parameters_that_work_pass() -> None:
    for url in (
        "rediss://:pw@h:6380/0?ssl_cert_reqs=required&ssl_check_hostname=false",
        "redis://h:6379/0",
        "unix:///tmp/redis.sock",
    ):
        assert redis_url_problem(url) is None, url


def test_bad_url_parameters_are_one_line_exit_2_in_commands_and_workers() -> None:
    for url, said in (
        ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=bogus", "ssl_cert_reqs must be one of none, optional, required"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout is not accepted"),
        ("rediss://127.0.0.1:6379/0", "needs the URL parameter ssl_cert_reqs"),  # Celery's backend requires it
    ):
        for command in (("labelq.cli", "health"), ("celery", "-A", "worker.celery_app", "worker")):
            line = one_line(run(*command, LABELQ_REDIS_URL=url))
            assert said in line and "LABELQ_REDIS_URL" in line, (command, line)
    flagged = one_line(run("labelq.cli", "dlq", "list", "--redis-url", "redis://127.0.0.1:6379/0?foo=1"))
    assert "URL parameter foo is not accepted" in flagged


def test_a_worker_whose_model_is_not_installed_refuses_to_start_in_one_line(redis_url: str) -> None:
    """Found by an outside check: `labelq worker` with LABELQ_MODEL naming a model not installed started, connected,
    then died on Celery's "Unrecoverable error" traceback (exit 1); it is a model problem, one line, exit 4."""
    env = {"LABELQ_REDIS_URL": redis_url, "LABELQ_MODEL": "no-such/model"}
    for command in (("labelq.cli", "worker"), ("celery", "-A", "worker.celery_app", "worker")):
        line = one_line(run(*command, **env), code=4)
        assert "model 'no-such/model' is not installed" in line, command


# nan, inf and negatives; transport options; the result backend; empty values (issue 32)

FLOAT_SETTINGS = [
    name
    for name, field in Settings.model_fields.items()
    if "float" in str(field.annotation)  # float, float | None, tuple of floats
]


def test_float_settings_are_found() -> None:
    assert {"realtime_max_wait_ms", "webhook_retry_delays_s", "embedding_center"} <= set(FLOAT_SETTINGS)


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_no_float_setting_takes_nan_or_inf(name: str, value: str, environ: typing.Callable[..., None]) -> None:
    variable = "LABELQ_" + name.upper()
    environ(**{variable: value})
    with pytest.raises(ConfigError, match=f"^invalid {variable}"):
        load_settings()


@pytest.mark.parametrize("value", ["nan,-5", "5,inf", "-1", "[1, -0.5]"])
def test_webhook_retry_delays_are_finite_and_not_negative(value: str, environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_WEBHOOK_RETRY_DELAYS_S=value)
    with pytest.raises(ConfigError, match=r"^invalid LABELQ_WEBHOOK_RETRY_DELAYS_S"):
        load_settings()


def test_webhook_worker_refuses_a_nan_delay_in_one_line() -> None:
    line = one_line(run("labelq.cli", "webhook-worker", LABELQ_WEBHOOK_RETRY_DELAYS_S="nan,-5"))
    assert "LABELQ_WEBHOOK_RETRY_DELAYS_S" in line


def test_an_infinite_realtime_wait_is_refused_naming_it() -> None:
    line = one_line(run("labelq.cli", "worker", LABELQ_REALTIME_MAX_WAIT_MS="inf"))
    assert "LABELQ_REALTIME_MAX_WAIT_MS" in line and "MAX_PAIRS" not in line


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("visibility_timeout=abc", "'visibility_timeout'"),
        ("visibility_timeout=0", "'visibility_timeout'"),
        ("socket_timeout=-1", "'socket_timeout'"),
        ('{"master_name": 3}', "'master_name'"),
        ('{"priority_steps": "abc"}', "'priority_steps'"),
        ("visiblity_timeout=30", "did you mean visibility_timeout"),
    ],
)
def test_transport_options_are_checked(options: str, named: str, environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_REDIS_TRANSPORT_OPTIONS=options)
    with pytest.raises(ConfigError, match=r"^invalid LABELQ_REDIS_TRANSPORT_OPTIONS") as refused:
        load_settings()
    assert named in str(refused.value)


def test_good_transport_options_pass(environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_REDIS_TRANSPORT_OPTIONS='{"master_name": "m", "visibility_timeout": 30, "priority_steps": [0, 9]}')
    assert load_settings().redis_transport_options["visibility_timeout"] == 30


def test_health_refuses_a_bad_transport_option_in_one_line() -> None:
    line = one_line(run("labelq.cli", "health", LABELQ_REDIS_TRANSPORT_OPTIONS="visibility_timeout=abc"))
    assert "LABELQ_REDIS_TRANSPORT_OPTIONS" in line and "visibility_timeout" in line


def test_the_result_backends_are_celerys() -> None:
    from celery.app.backends import BACKEND_ALIASES

    from worker.settings import CELERY_RESULT_BACKENDS

    assert set(CELERY_RESULT_BACKENDS) == set(BACKEND_ALIASES)


@pytest.mark.parametrize("backend", ["bogus://x", "not a url", "mongodb://h/db"])
def test_an_unknown_result_backend_is_refused(backend: str, environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_RESULT_BACKEND=backend)
    with pytest.raises(ConfigError, match=r"^invalid LABELQ_RESULT_BACKEND"):
        load_settings()


@pytest.mark.parametrize("backend", ["disabled", "redis://127.0.0.1:6379/1", "rpc://"])
def test_known_result_backends_pass(backend: str, environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_RESULT_BACKEND=backend)
    assert load_settings().result_backend == backend


@pytest.mark.parametrize("name", ["PREFER_QUANTIZED", "TOKEN_BUDGET", "REALTIME_MAX_WAIT_MS", "RESULT_BACKEND"])
def test_an_empty_value_means_the_default(name: str, environ: typing.Callable[..., None]) -> None:
    environ(**{"LABELQ_" + name: ""})
    assert getattr(load_settings(), name.lower()) == Settings.model_fields[name.lower()].default


def test_an_empty_list_is_still_none(environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_WEBHOOK_RETRY_DELAYS_S="")  # no retries, not the default backoff
    assert load_settings().webhook_retry_delays_s == ()


def test_a_scalar_that_does_not_parse_says_what_to_write(environ: typing.Callable[..., None]) -> None:
    environ(LABELQ_REALTIME_BATCH_SIZE="x")
    with pytest.raises(ConfigError, match=r"set it to a whole number, e\.g\. 16"):
        load_settings()


def test_a_repeated_map_name_and_a_url_for_an_allowed_host_are_refused(environ: typing.Callable[..., None]) -> None:
    """Found by an outside check: `default=...,default=...` kept the second secret silently, and a URL given as an
    allowed host was accepted and could never match a webhook's host (every delivery refused)."""
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="
    environ(LABELQ_WEBHOOK_SECRETS=f"default={secret},default={secret}")
    with pytest.raises(ConfigError, match="repeats the name of an earlier one"):
        load_settings()
    environ(LABELQ_WEBHOOK_SECRETS=f"default={secret}", LABELQ_WEBHOOK_ALLOWED_HOSTS="http://example.com/hook")
    with pytest.raises(ConfigError, match="is not a host name"):
        load_settings()
    environ(LABELQ_WEBHOOK_ALLOWED_HOSTS="hooks.example.com,*.example.org,::1,10.0.0.5")
    assert load_settings().webhook_allowed_hosts == ("hooks.example.com", "*.example.org", "::1", "10.0.0.5")
