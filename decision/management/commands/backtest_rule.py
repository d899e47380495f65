"""python manage.py backtest_rule RULE [--number N] [--jobs] [--chunk-size N] [--json]

A rule version over the whole population, beside the rule's active version: how many patients it
would fire for, how many the active version fires for, and how many would be new or gone. The
same backtest as the admin's action; nothing but the Backtest row is written. In this process by
default, with a progress bar; ``--jobs`` queues it as jobs (Celery workers, or in-process on the
embedded default) and says where to follow it. Counts only: no patient is named.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse
from tqdm import tqdm

from decision.models import Backtest, Rule, RuleVersion
from decision.services import BACKTEST_CHUNK, BacktestChunkSizeError, backtest_queue, backtest_run


class Command(BaseCommand):
    help = ("Backtest a rule version (default: the rule's newest) over the population beside its active version; "
            "prints counts, never patients.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("rule", help="The rule's slug (see the admin, Decision support > Rules)")
        parser.add_argument("--number", type=int, help="The version number (default: the newest)")
        parser.add_argument("--jobs", action="store_true", help="Queue it as jobs instead of running it here")
        parser.add_argument("--chunk-size", type=int, default=BACKTEST_CHUNK, help="Patients per chunk or job")
        parser.add_argument("--json", action="store_true", help="The figures as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        version = self._version(options["rule"], options["number"])
        try:
            bt = self._run(version, options)
        except BacktestChunkSizeError as exc:
            raise CommandError(f"--chunk-size {exc}") from None
        self._report(bt, as_json=options["json"])

    def _run(self, version: RuleVersion, options: dict[str, Any]) -> Backtest:
        if options["jobs"]:
            bt = backtest_queue(version, chunk_size=options["chunk_size"])
            bt.refresh_from_db()  # on the embedded default the jobs have run by now
            return bt
        bars: list[tqdm] = []  # made at the first chunk, when the population's size is known

        def progress(done: int, total: int) -> None:
            if not bars:
                bars.append(tqdm(total=total, unit="patients", disable=options["json"] or options["verbosity"] == 0))
            bars[0].update(done - bars[0].n)

        try:
            return backtest_run(version, batch_size=options["chunk_size"], progress=progress)
        finally:
            for bar in bars:
                bar.close()

    def _version(self, slug: str, number: int | None) -> RuleVersion:
        rule = Rule.objects.filter(slug=slug).first()
        if rule is None:
            known = ", ".join(Rule.objects.order_by("slug").values_list("slug", flat=True)[:20])
            raise CommandError(f"no rule {slug!r}" + (f"; rules: {known}" if known else " (no rules: run load_starter_rules)"))
        versions = rule.versions.order_by("-number")
        version = versions.filter(number=number).first() if number is not None else versions.first()
        if version is None:
            have = ", ".join(str(n) for n in versions.values_list("number", flat=True))
            raise CommandError(f"rule {slug!r} has no version {number}" + (f" (versions: {have})" if have else ""))
        return version

    def _report(self, bt: Backtest, *, as_json: bool) -> None:
        version, compared = bt.rule_version, bt.compared_with
        figures = {
            "backtest": str(bt.external_id), "status": bt.status, "rule": version.rule.slug, "version": version.number,
            "compared_with": compared.number if compared else None, "patients": bt.patients,
            "fired": bt.fired, "compared_fired": bt.compared_fired, "newly_fired": bt.newly_fired,
            "no_longer_fired": bt.no_longer_fired, "seconds": round(bt.seconds, 2) if bt.seconds is not None else None,
            "admin": reverse("admin:decision_backtest_change", args=[bt.pk]),
        }
        if as_json:
            self.stdout.write(json.dumps(figures))
            return
        head = f"{version.rule.slug} v{version.number} ({version.status})"
        if bt.status != Backtest.Status.DONE:
            self.stdout.write(f"{head}: backtest {bt.status} over {bt.patients} patients in {bt.chunks} job(s); "
                              f"follow it in the admin at {figures['admin']}")
            return
        share = f" ({100 * bt.fired / bt.patients:.1f}%)" if bt.patients else ""
        self.stdout.write(f"{head}: fires for {bt.fired} of {bt.patients} patients{share} in {figures['seconds']} s")
        if compared is None:
            self.stdout.write("  no other active version to compare with")
        else:
            self.stdout.write(f"  active v{compared.number} fires for {bt.compared_fired}: {bt.newly_fired} newly fired, "
                              f"{bt.no_longer_fired} no longer fired")
        self.stdout.write(f"  sample and traces: {figures['admin']}")
