"""The Celery worker: starts as `celery -A worker.app worker` with the safety settings the design needs,
on Redis by default and on RabbitMQ through an amqp:// URL."""

from __future__ import annotations

import json
import subprocess
import sys

from celery import Celery

from shared.tasks import celery_config
from tests.stack import Stack


def _ping(broker_url: str) -> list[dict[str, object]]:
    app = Celery("probe", set_as_current=False)
    app.conf.update(celery_config(broker_url))
    try:
        replies: list[dict[str, object]] = app.control.ping(timeout=3.0)
        return replies
    finally:
        app.close()


def test_worker_subprocess_answers_on_redis(worker: Stack) -> None:
    replies = _ping(worker.broker_url)
    assert any(r for r in replies), replies


def test_worker_runs_on_rabbitmq_via_amqp_url(stack: Stack) -> None:
    url = "amqp://guest:guest@127.0.0.1:5672//"
    stack.start_worker(name="worker-amqp", env={"KMS_BROKER_URL": url})
    try:
        replies = _ping(url)
        assert any(any(str(k).startswith("worker-amqp") for k in r) for r in replies), replies
    finally:
        stack.stop("worker-amqp")


def test_celery_configuration_is_json_only_acks_late_and_keeps_no_results(stack: Stack) -> None:
    code = (
        "from worker.app import app; c = app.conf; "
        "print(c.task_serializer, sorted(c.accept_content), c.task_acks_late, c.task_reject_on_worker_lost, "
        "c.task_ignore_result, c.result_backend, c.broker_url)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=stack.worker_env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["json", "['json']", "True", "True", "True", "None", stack.broker_url]


def test_beat_schedules_the_vacuum_task_on_the_control_queue_unless_its_interval_is_0(stack: Stack) -> None:
    code = ("import json; from worker.app import app; c = app.conf; "
            "print(json.dumps([c.beat_schedule.get('vacuum'), c.task_routes['kms.vacuum']]))")
    runs = [json.loads(subprocess.run([sys.executable, "-c", code], env={**stack.worker_env, **extra},
                                      capture_output=True, text=True, check=True, timeout=60).stdout)
            for extra in ({}, {"KMS_VACUUM_INTERVAL_SECONDS": "0"})]
    assert runs[0] == [{"task": "kms.vacuum", "schedule": 60.0, "options": {"expires": 60.0}},
                       {"queue": "kms.control"}]
    assert runs[1] == [None, {"queue": "kms.control"}]


def test_kms_pki_worker_and_beat_commands_start_celery(stack: Stack) -> None:
    for cmd in (["worker", "--help"], ["beat", "--help"]):
        out = subprocess.run([sys.executable, "-m", "api.cli", *cmd], env=stack.worker_env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "celery" in out.stdout.lower() and "--loglevel" in out.stdout
