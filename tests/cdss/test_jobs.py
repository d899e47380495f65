"""The job lifecycle, in process (the embedded default). Real workers: tests/integration."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from cdss.celery import app
from cdss.jobs import runner
from cdss.models import Job
from cdss.tasks import run_job_task
from tests.jobsapp.models import ProbeResult

S = Job.Status




def enqueue(kind: str = "test.probe", **params):
    with transaction.atomic():
        return runner.job_enqueue(kind=kind, params=params)


@pytest.mark.django_db
def test_a_job_is_written_in_the_callers_transaction_and_run_after_commit(eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = enqueue(key="a")
        assert Job.objects.get(pk=job.pk).status == S.QUEUED  # not run before commit
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == S.SUCCEEDED and job.attempts == 1 and job.progress == 100
    assert job.result == {"key": "a", "written": 1}
    assert job.started_at and job.finished_at and job.worker
    assert ProbeResult.objects.filter(key="a").count() == 1


@pytest.mark.django_db
def test_a_rolled_back_transaction_leaves_no_job_and_publishes_nothing(eager, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        runner.job_enqueue(kind="test.probe", params={"key": "x"})
        raise RuntimeError("caller failed")
    assert callbacks == [] and not Job.objects.exists()


@pytest.mark.django_db
def test_the_same_work_asked_twice_is_one_job(eager):
    first = enqueue(key="same")
    second = enqueue(key="same")
    other = enqueue(key="different")
    assert first.pk == second.pk != other.pk
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_running_a_jobs_task_twice_by_hand_writes_one_result(eager):
    job = enqueue(key="twice")
    assert run_job_task(job.pk) == "succeeded"
    assert run_job_task(job.pk) == "not-claimed"
    # Even forced back to queued (a re-delivered message after a lost lease), the result's
    # unique key stops a second row.
    Job.objects.filter(pk=job.pk).update(status=S.QUEUED)
    assert run_job_task(job.pk) == "succeeded"
    assert ProbeResult.objects.filter(key="twice").count() == 1
    job.refresh_from_db()
    assert job.result["written"] == 0


@pytest.mark.django_db
def test_a_job_that_always_raises_is_dead_after_its_attempts_with_its_error(eager):
    job = enqueue("test.fail")
    assert run_job_task(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == S.DEAD and job.attempts == 3
    assert "RuntimeError: the test job failed on purpose" in job.error
    assert "kinds.py" in job.error


@pytest.mark.django_db
def test_in_a_worker_a_failed_attempt_waits_out_its_back_off(settings):
    settings.CDSS_JOB_RETRY_BACKOFF_SECONDS = 30
    job = enqueue("test.fail")
    assert runner.job_run(job.pk, worker="w1") == "failed"
    job.refresh_from_db()
    assert job.status == S.FAILED and job.attempts == 1 and job.published_at is None
    assert job.available_at > timezone.now() + dt.timedelta(seconds=25)
    assert runner.job_claim(job.pk, "w1") is None  # not before its time


@pytest.mark.django_db
def test_only_one_worker_wins_the_claim():
    job = enqueue(key="claim")
    assert runner.job_claim(job.pk, "w1") is not None
    assert runner.job_claim(job.pk, "w2") is None
    assert Job.objects.get(pk=job.pk).worker == "w1"


@pytest.mark.django_db
def test_progress_is_clamped_and_renews_the_lease(settings):
    settings.CDSS_JOB_LEASE_SECONDS = 5
    job = runner.job_claim(enqueue(key="p").pk, "w1")
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    runner.JobContext(job=job, worker="w1").progress(140, "almost")
    job.refresh_from_db()
    assert job.progress == 100 and job.progress_message == "almost"
    assert job.lease_expires_at > timezone.now() + dt.timedelta(seconds=3)
    # a worker that lost the job cannot touch it
    runner.JobContext(job=job, worker="w2").progress(10)
    job.refresh_from_db()
    assert job.progress == 100


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_writes_nothing():
    job = enqueue(key="lost")
    claimed = runner.job_claim(job.pk, "w1")
    assert claimed is not None
    # The reaper gives the job to another worker while w1 is still busy.
    Job.objects.filter(pk=job.pk).update(worker="w2")
    from cdss.jobs.registry import get_kind

    spec = get_kind("test.probe")
    payload = spec.handler(claimed, runner.JobContext(claimed, "w1"))
    with pytest.raises(runner.LeaseLost), transaction.atomic():
        assert spec.writer is not None
        spec.writer(claimed, payload)
        if not Job.objects.filter(pk=job.pk, status=S.RUNNING, worker="w1").update(status=S.SUCCEEDED):
            raise runner.LeaseLost("taken over")
    assert not ProbeResult.objects.filter(key="lost").exists()


@pytest.mark.django_db
def test_a_result_that_is_not_kept_is_handed_to_the_kinds_discarder():
    from tests.jobsapp import kinds

    kinds.LEFT.clear()
    kinds.DISCARDED.clear()
    assert runner.job_run(enqueue("test.leaves_files", key="kept").pk) == "succeeded"
    assert kinds.LEFT == ["kept"] and kinds.DISCARDED == []  # kept: nothing to discard

    failed = enqueue("test.leaves_files", key="writer-fails", fail_write=True)
    assert runner.job_run(failed.pk) == "failed"
    assert kinds.DISCARDED == ["writer-fails"]
    assert not ProbeResult.objects.filter(key="writer-fails").exists()  # the writer's rows rolled back

    # the lease is lost between the handler and the status change: the result is thrown away
    lost = enqueue("test.leaves_files", key="lease-lost", taken_over=True)
    assert runner.job_run(lost.pk) == "lease-lost"
    assert kinds.DISCARDED == ["writer-fails", "lease-lost"]
    assert not ProbeResult.objects.filter(key="lease-lost").exists()


@pytest.mark.django_db
def test_a_discarder_that_fails_is_logged_and_the_jobs_own_error_recorded(monkeypatch, caplog):
    import dataclasses

    from cdss.jobs import registry

    def broken(job, payload):
        raise OSError("storage unreachable")

    kind = registry.get_kind("test.leaves_files")
    monkeypatch.setitem(registry._KINDS, kind.name, dataclasses.replace(kind, discard=broken))
    job = enqueue("test.leaves_files", key="both-fail", fail_write=True)
    assert runner.job_run(job.pk) == "failed"
    job.refresh_from_db()
    assert "the writer failed on purpose" in job.error
    assert any("discarding its unkept result failed (OSError)" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_the_reaper_requeues_expired_leases_and_buries_exhausted_jobs():
    past = timezone.now() - dt.timedelta(seconds=1)
    retry = runner.job_claim(enqueue(key="r1").pk, "w1")
    exhausted = runner.job_claim(enqueue(key="r2").pk, "w1")
    alive = runner.job_claim(enqueue(key="r3").pk, "w1")
    Job.objects.filter(pk__in=[retry.pk, exhausted.pk]).update(lease_expires_at=past)
    Job.objects.filter(pk=exhausted.pk).update(attempts=3)

    assert runner.jobs_reap_expired() == 2

    states = dict(Job.objects.values_list("pk", "status"))
    assert states == {retry.pk: S.QUEUED, exhausted.pk: S.DEAD, alive.pk: S.RUNNING}
    assert "lease expired" in Job.objects.get(pk=exhausted.pk).error


@pytest.mark.django_db
def test_the_relay_publishes_jobs_the_broker_never_got(eager):
    job = enqueue(key="relay")  # the on-commit publish never ran in this test transaction
    assert Job.objects.get(pk=job.pk).published_at is None
    assert runner.jobs_publish_pending() == 1
    assert Job.objects.get(pk=job.pk).status == S.SUCCEEDED


@pytest.mark.django_db
def test_retry_and_cancel(eager):
    dead = enqueue("test.fail")
    run_job_task(dead.pk)
    dead.refresh_from_db()
    assert runner.job_retry(dead) and Job.objects.get(pk=dead.pk).status == S.QUEUED
    waiting = enqueue(key="c")
    assert runner.job_cancel(waiting)
    assert run_job_task(waiting.pk) == "not-claimed"
    assert Job.objects.get(pk=waiting.pk).status == S.CANCELLED


@pytest.mark.django_db
def test_the_jobs_command_enqueues_and_reports(eager, capsys, patient_a, patient_b):
    call_command("jobs", "enqueue", "test.probe", "--params", '{"key": "cmd"}', "--no-progress")
    call_command("jobs", "status", "--json")
    out = capsys.readouterr().out
    counts = json.loads(out[out.index("{"):])
    assert counts == {"test.probe": {"queued": 1}}  # on_commit callbacks do not run in this test


def test_an_unknown_kind_is_a_clear_error(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no job kind 'nope'"):
        call_command("jobs", "enqueue", "nope")


def test_a_task_message_carries_only_the_job_id():
    from cdss.tasks import run_job_task as task

    assert task.acks_late is True and task.reject_on_worker_lost is True
    sig = task.s(42)
    assert sig.args == (42,) and sig.kwargs == {}
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.worker_prefetch_multiplier == 1


def test_a_resident_model_loads_once_per_process():
    from cdss.jobs.registry import load_once

    calls = []

    def loader():
        calls.append(1)
        return object()

    first = load_once("test-model", loader)
    assert load_once("test-model", loader) is first
    assert calls == [1]


@pytest.mark.django_db
def test_the_jobs_of_one_transaction_are_published_together_after_commit(eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        for key in ("b1", "b2", "b3"):
            runner.job_enqueue(kind="test.probe", params={"key": key})
        try:
            with transaction.atomic():  # a savepoint rolled back: its job never existed
                runner.job_enqueue(kind="test.probe", params={"key": "gone"})
                raise RuntimeError
        except RuntimeError:
            pass
        runner.job_enqueue(kind="test.probe", params={"key": "b4"})
    assert len(callbacks) == 1
    assert set(ProbeResult.objects.values_list("key", flat=True)) == {"b1", "b2", "b3", "b4"}
    assert set(Job.objects.values_list("status", flat=True)) == {S.SUCCEEDED}


def test_a_worker_looks_stalled_only_when_it_could_take_waiting_tasks_and_took_none():
    from cdss.jobs.watch import Sample, looks_stalled

    waiting = Sample(waiting=3, received=7, room=True)
    assert looks_stalled(waiting, Sample(waiting=3, received=7, room=True))
    assert not looks_stalled(None, waiting)  # the first check after (re)connecting
    assert not looks_stalled(waiting, Sample(waiting=3, received=8, room=True))  # it received one
    assert not looks_stalled(waiting, Sample(waiting=0, received=7, room=True))  # nothing waits now
    assert not looks_stalled(Sample(waiting=0, received=7, room=True), waiting)  # nothing waited before
    assert not looks_stalled(waiting, Sample(waiting=3, received=7, room=False))  # busy: its limit reached
    assert not looks_stalled(Sample(waiting=3, received=7, room=False), waiting)


def test_queue_depths_gives_up_on_a_broker_that_accepts_and_never_answers(monkeypatch):
    import socket
    import threading
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(silent.accept()[0]) for _ in range(8)], daemon=True).start()
    monkeypatch.setattr(app.conf, "broker_read_url", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    answer: list[object] = []
    asking = threading.Thread(target=lambda: answer.append(runner.queue_depths({"risk"})), daemon=True)
    started = time.monotonic()
    try:
        asking.start()
        asking.join(timeout=40)  # a thread: without its timeouts the call would hang this test for ever
        assert not asking.is_alive(), "queue_depths still waiting for a broker that never answers"
        assert answer == [None]
        assert time.monotonic() - started < 30  # the socket timeout (5 s), a retry at most
        assert accepted  # it did connect: the silence, not a refusal, was what it gave up on
    finally:
        silent.close()


def test_beat_logs_a_publish_that_failed_in_one_line(caplog):
    """What celery beat logs when the broker is down at a tick: its own apply_entry, with the
    publish failing (cdss.celery.OneLineBeatErrors keeps the first line)."""
    from celery.beat import ScheduleEntry, Scheduler

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    scheduler = Scheduler(app, lazy=True)
    scheduler.apply_async = refused  # type: ignore[method-assign]
    entry = ScheduleEntry(name="publish-pending-jobs", task="cdss.publish_pending_jobs", schedule=5.0, app=app)
    with caplog.at_level("ERROR", logger="celery.beat"):
        scheduler.apply_entry(entry)
    [record] = [r for r in caplog.records if r.name == "celery.beat"]
    assert record.getMessage() == "Message Error: [Errno 111] Connection refused"
    assert record.exc_info is None and "Traceback" not in caplog.text
