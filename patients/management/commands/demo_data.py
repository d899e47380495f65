"""python manage.py demo_data [--patients N] [--seed S] [--as-of YYYY-MM-DD]

Creates the two demo sites and the demo users, then imports generated patients through the FHIR
importer (the same path as ``import_fhir``). Safe to run again: users and sites are only created
when missing, and the importer leaves unchanged resources alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from tqdm import tqdm

from patients.demo import DEFAULT_PATIENTS, DEFAULT_SEED, DEMO_SITES, acute_visit_start, demo_bundles
from patients.fhir.importer import UnitResult
from patients.fhir.parse import unit_from_document
from patients.models import Site, SiteMembership
from patients.selectors import CLINICIAN_GROUP, RULES_ADMIN_GROUP
from patients.services import ImportSummary, fhir_import_units


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    groups: tuple[str, ...] = ()
    staff: bool = False
    superuser: bool = False
    sites: bool = False  # member of every demo site


# The passwords are published in the README and printed by `./run demo`: demo machines only.
DEMO_USERS = (
    DemoUser("demo", "demo-clinician", groups=(CLINICIAN_GROUP,), sites=True),
    DemoUser("admin", "demo-admin", staff=True, superuser=True),
    DemoUser("rules", "demo-rules", groups=(RULES_ADMIN_GROUP,), staff=True),
)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--as-of: {value!r} is not a date (YYYY-MM-DD)") from None


@transaction.atomic
def demo_sites_and_users_ensure() -> dict[str, Site]:
    """The demo sites and users, created where missing. A demo password that was changed is put
    back, so that the logins printed by `./run demo` work."""
    sites = {}
    for demo_site in DEMO_SITES:
        site, _ = Site.objects.get_or_create(code=demo_site.code, defaults={"name": demo_site.name})
        sites[site.code] = site
    for spec in DEMO_USERS:
        user, created = User.objects.get_or_create(username=spec.username)
        changed = created or user.is_staff != spec.staff or user.is_superuser != spec.superuser or not user.is_active
        user.is_staff, user.is_superuser, user.is_active = spec.staff, spec.superuser, True
        if created or not user.check_password(spec.password):
            user.set_password(spec.password)
            changed = True
        if changed:
            user.save()
        for name in spec.groups:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
        if spec.sites:
            for site in sites.values():
                SiteMembership.objects.get_or_create(user=user, site=site)
    return sites


class Command(BaseCommand):
    help = ("Load the demo: two sites, the users demo/admin/rules, and generated patients imported as FHIR "
            "bundles. Refuses to run with DJANGO_DEBUG off (the demo passwords are public).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                            help=f"How many patients (default {DEFAULT_PATIENTS})")
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                            help=f"Seed of the generator (default {DEFAULT_SEED}); same seed, same patients")
        parser.add_argument("--as-of", type=_date, default=None,
                            help="The day the record ends, YYYY-MM-DD (default: today, UTC)")
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_data creates users with published passwords; it runs only with "
                               "DJANGO_DEBUG on.")
        if options["patients"] < 0:
            raise CommandError("--patients must be 0 or more.")
        now = dt.datetime.now(dt.UTC)
        as_of = options["as_of"] or now.date()
        # Loaded for today, the acute visit starts a few hours before now (not before midnight), so
        # its sepsis screen shows for most of a day whatever the hour of the load.
        acute_start = None if options["as_of"] else acute_visit_start(now)
        sites = demo_sites_and_users_ensure()
        patients = demo_bundles(patients=options["patients"], seed=options["seed"], as_of=as_of,
                                acute_start=acute_start)
        bar = tqdm(total=len(patients), unit="patient", disable=options["no_progress"], file=self.stderr._out)

        def progress(result: UnitResult) -> None:
            bar.update(1)
            if not result.ok:
                bar.write(f"FAILED {result.label}")

        summary = ImportSummary()
        for code, site in sites.items():
            units = [unit_from_document(p.bundle, f"demo patient {p.mrn}") for p in patients if p.site.code == code]
            summary.units += fhir_import_units(units, site=site, progress=progress).units
        bar.close()
        self.print_summary(summary)
        if not summary.ok:
            raise CommandError(f"{len(summary.failed)} demo bundle(s) failed to import; nothing was written from them.")
        users = ", ".join(f"{u.username} / {u.password}" for u in DEMO_USERS)
        self.stdout.write(f"Demo users: {users}")

    def print_summary(self, summary: ImportSummary) -> None:
        out = self.stdout
        data = summary.as_dict()
        out.write(f"{data['bundles']} bundle(s), {data['bundles_failed']} failed, {summary.resources} resources read")
        out.write(f"{'type':<28}{'created':>9}{'updated':>9}{'unchanged':>11}")
        for model, counts in data["counts"].items():
            out.write(f"{model:<28}{counts.get('created', 0):>9}{counts.get('updated', 0):>9}"
                      f"{counts.get('unchanged', 0):>11}")
        for err in data["errors"]:
            loc = f" {err['location']}:" if err["location"] else ":"
            out.write(self.style.ERROR(f"{err['source']}{loc} {err['message']}"))
