"""Reads of decision support, scoped to what the user may see.

- The recommendations of one patient (the patient page's cards), ordered by severity, shadow
  recommendations never included, snoozed ones left out while the snooze lasts.
- Counts by severity for many patients at once (the worklist), in one query.
- Per-rule statistics for the admin: how often a rule fires, how clinicians answer it, how the
  override rate moves over time (the numbers that show which alerts cause fatigue).

The patient itself is access-checked by ``patients.selectors.patient_get_for_user`` (a 404 for
another site's patient); a recommendation is reached only through a patient the user may see.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Case, Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce, TruncMonth, TruncWeek
from django.http import Http404
from django.utils import timezone

from patients.models import Patient, SiteMembership
from patients.selectors import patient_list_for_user

from .models import SEVERITY_RANK, Recommendation, RecommendationAction, Rule, RuleVersion, Snooze

SEVERITIES: tuple[str, ...] = tuple(str(s) for s in sorted(SEVERITY_RANK, key=lambda s: SEVERITY_RANK[s]))  # critical first

# Severity as a number the database sorts by: critical (0), warning (1), info (2).
SEVERITY_ORDER = Case(
    *[When(severity=str(severity), then=Value(rank)) for severity, rank in SEVERITY_RANK.items()],
    default=Value(9),
    output_field=IntegerField(),
)


def _snoozed(now: dt.datetime) -> Exists:
    """True for a recommendation whose rule is snoozed for its patient at ``now``."""
    return Exists(
        Snooze.objects.filter(patient_id=OuterRef("patient_id"), rule_id=OuterRef("rule_id"), until__gt=now)
    )


def recommendation_visible(*, now: dt.datetime | None = None) -> QuerySet[Recommendation]:
    """Active, not shadow, not snoozed: what a clinician is asked to act on."""
    now = now or timezone.now()
    return Recommendation.objects.filter(status=Recommendation.Status.ACTIVE, shadow=False).exclude(_snoozed(now))


def _specialties(user: Any, patient: Patient) -> set[str]:
    return {s.strip().lower() for s in SiteMembership.objects.filter(user=user, site_id=patient.site_id)
            .values_list("specialty", flat=True) if s.strip()}


def _for_specialties(recs: list[Recommendation], user: Any, patient: Patient) -> list[Recommendation]:
    """A rule limited to specialties shows only to users of one of them at the patient's site (one
    query, only when such a rule is among ``recs``)."""
    if not any(r.rule.specialties for r in recs):
        return recs
    mine = _specialties(user, patient)
    return [r for r in recs if not r.rule.specialties or mine & {str(s).strip().lower() for s in r.rule.specialties}]


def _hidden_by_specialty(user: Any) -> Q | None:
    """What the user must not see for want of a rule's specialty, as a filter over recommendations:
    for each rule limited to specialties, its recommendations outside the sites where the user has
    one of them. One query for the rules so limited, one more for the user's memberships when
    there are any; None when no rule is limited."""
    limited = [(pk, {str(s).strip().lower() for s in specs}) for pk, specs in
               Rule.objects.exclude(specialties=[]).values_list("pk", "specialties")]
    if not limited:
        return None
    memberships = [(site_id, specialty.strip().lower()) for site_id, specialty in
                   SiteMembership.objects.filter(user=user).values_list("site_id", "specialty")]
    hidden = Q(pk__in=[])
    for rule_id, specs in limited:
        sites = [site_id for site_id, specialty in memberships if specialty and specialty in specs]
        hidden |= Q(rule_id=rule_id) & ~Q(patient__site_id__in=sites)
    return hidden


def recommendation_list_for_patient(
    *, patient: Patient, user: Any, history: bool = False, now: dt.datetime | None = None
) -> list[Recommendation]:
    """The cards of the patient page: visible recommendations, critical first, then warning, then
    info, newest first within a severity. ``history`` adds the answered and resolved ones (and the
    snoozed active ones, marked ``is_snoozed``), after the open ones. One query, whatever their
    number (the rule and the version that fired come with each row); a rule limited to specialties
    shows only to users of those specialties at the patient's site (one more query where there is
    such a rule)."""
    now = now or timezone.now()
    qs = (
        Recommendation.objects.filter(patient=patient, shadow=False)
        .select_related("rule", "rule_version")
        .annotate(severity_order=SEVERITY_ORDER, is_snoozed=_snoozed(now))
    )
    if not history:
        qs = qs.filter(status=Recommendation.Status.ACTIVE, is_snoozed=False)
    rows: list[Recommendation] = _for_specialties(list(qs.order_by("severity_order", "-last_fired_at", "pk")),
                                                  user, patient)
    # Open cards first (active, not snoozed), then the rest by when their status changed.
    open_rows = [r for r in rows if r.status == Recommendation.Status.ACTIVE and not r.is_snoozed]  # type: ignore[attr-defined]
    closed = [r for r in rows if r not in open_rows]
    closed.sort(key=lambda r: r.status_changed_at, reverse=True)
    return open_rows + closed


def recommendation_get_for_user(user: Any, external_id: uuid.UUID | str) -> Recommendation:
    """A recommendation shown to clinicians (never a shadow one) of a patient the user may see;
    Http404 otherwise. One query; the patient, rule and version come with it."""
    try:
        key = external_id if isinstance(external_id, uuid.UUID) else uuid.UUID(str(external_id))
    except ValueError:
        raise Http404("No such recommendation.") from None
    try:
        return (
            Recommendation.objects.select_related("patient", "patient__site", "rule", "rule_version")
            .filter(patient__in=patient_list_for_user(user).values("pk"), shadow=False)
            .annotate(is_snoozed=_snoozed(timezone.now()))
            .get(external_id=key)
        )
    except Recommendation.DoesNotExist:
        raise Http404("No such recommendation.") from None


@dataclass(frozen=True)
class SeverityCounts:
    critical: int = 0
    warning: int = 0
    info: int = 0

    @property
    def total(self) -> int:
        return self.critical + self.warning + self.info


def severity_counts_for_patients(
    *, user: Any, external_ids: Iterable[uuid.UUID], now: dt.datetime | None = None
) -> dict[uuid.UUID, SeverityCounts]:
    """Visible recommendations per patient and severity, for the patients among ``external_ids``
    the user may see (the others are left out, as if unknown). One query, plus one for the rules
    limited to specialties (and one for the user's specialties where there are such rules); every
    requested patient the user may see gets an entry (zeros where none)."""
    ids = list(external_ids)
    if not ids:
        return {}
    visible = recommendation_visible(now=now).filter(patient_id=OuterRef("pk"))
    hidden = _hidden_by_specialty(user)
    if hidden is not None:
        visible = visible.exclude(hidden)
    rows = (
        patient_list_for_user(user)
        .filter(external_id__in=ids)
        .annotate(**{f"n_{severity}": _count_subquery(visible.filter(severity=severity)) for severity in SEVERITIES})
        .values_list("external_id", *[f"n_{severity}" for severity in SEVERITIES])
        .order_by()
    )
    return {row[0]: SeverityCounts(*row[1:]) for row in rows}


def patient_alert_list_for_user(user: Any, *, now: dt.datetime | None = None) -> QuerySet[Patient]:
    """Patients of the user's sites with at least one visible recommendation, the most urgent
    first: most critical, then most warnings, then most info; counts annotated as ``n_critical``,
    ``n_warning``, ``n_info``. One query per page (plus the paginator's count, and the specialty
    look-ups of ``severity_counts_for_patients``)."""
    visible = recommendation_visible(now=now).filter(patient_id=OuterRef("pk"))
    hidden = _hidden_by_specialty(user)
    if hidden is not None:
        visible = visible.exclude(hidden)
    qs = patient_list_for_user(user).filter(Exists(visible))
    annotations = {
        f"n_{severity}": _count_subquery(visible.filter(severity=severity)) for severity in SEVERITIES
    }
    return qs.annotate(**annotations).order_by(
        *[f"-n_{severity}" for severity in SEVERITIES], "family_name", "given_names", "pk"
    )


def _count_subquery(qs: QuerySet[Recommendation]) -> Any:
    counted = qs.order_by().values("patient_id").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def recommendations_for_patient(patient: Patient, *, user: Any) -> list[Recommendation]:
    """The active, shown recommendations for a patient the caller may already see (use
    ``patients.selectors.patient_get_for_user`` first): not shadow, not snoozed, for a rule limited
    to specialties only for users of those specialties at the patient's site; critical first, then
    the most recent."""
    return recommendation_list_for_patient(patient=patient, user=user)


def active_recommendations(patient_ids: Any = None) -> QuerySet[Recommendation]:
    """Active, shown, not snoozed (for worklist counts by severity)."""
    qs = recommendation_visible()
    if patient_ids is not None:
        qs = qs.filter(patient_id__in=patient_ids)
    return qs


# --------------------------------------------------------------------------------------------
# Statistics (admin)


@dataclass(frozen=True)
class ExternalAnswers:
    """Answers recorded outside ``RecommendationAction``, counted per rule, version, kind, reason
    and month: CDS Hooks feedback on a card with no stored recommendation to attach to (a patient
    known only to the EHR). ``action`` is a ``RecommendationAction.Action`` value."""

    rule_id: int
    version_number: int
    action: str
    reason_code: str
    reason_display: str
    month: dt.date
    count: int


@dataclass
class ExternalStats:
    fired: dict[int, int] = field(default_factory=dict)  # rule id -> patients shown the rule elsewhere
    answers: list[ExternalAnswers] = field(default_factory=list)


# Registered by the apps that keep such answers (``cdshooks.apps``); decision imports no app above
# it. Called with a rule id (None: every rule) and ``since``.
ANSWER_PROVIDERS: list[Callable[[int | None, dt.datetime | None], ExternalStats]] = []


def _external(rule_id: int | None, since: dt.datetime | None) -> ExternalStats:
    out = ExternalStats()
    for provider in ANSWER_PROVIDERS:
        stats = provider(rule_id, since)
        for key, n in stats.fired.items():
            out.fired[key] = out.fired.get(key, 0) + n
        out.answers.extend(stats.answers)
    return out


@dataclass
class ReasonCount:
    code: str
    display: str
    count: int


@dataclass
class MonthPoint:
    month: dt.date
    accepted: int
    overridden: int

    @property
    def answered(self) -> int:
        return self.accepted + self.overridden

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.answered if self.answered else None


@dataclass
class RuleStatistics:
    """How a rule's recommendations fared: ``fired`` counts recommendations shown to clinicians
    (one per patient and episode of firing; re-evaluation does not count again) and, once per
    patient, CDS Hooks cards for patients not stored here; ``shadow`` those recorded in shadow
    mode. Answers are clinicians' actions (in the application or CDS Hooks feedback, including
    feedback on patients not stored here); the override rate is overridden / (accepted +
    overridden)."""

    rule: Rule
    fired: int = 0
    shadow: int = 0
    active: int = 0
    snoozed: int = 0
    resolved: int = 0
    accepted: int = 0
    overridden: int = 0
    patients: int = 0
    reasons: list[ReasonCount] = field(default_factory=list)
    months: list[MonthPoint] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return self.accepted + self.overridden

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.answered if self.answered else None

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.fired if self.fired else None


def rule_statistics_detail(*, rule: Rule, since: dt.datetime | None = None, now: dt.datetime | None = None) -> RuleStatistics:
    """The statistics page of one rule. Four queries: recommendations by status, actions by kind
    and reason, actions by month, and per version. ``since`` limits recommendations to those first
    fired then or later and actions to those taken then or later."""
    now = now or timezone.now()
    recs = Recommendation.objects.filter(rule=rule)
    actions = RecommendationAction.objects.filter(rule=rule)
    if since is not None:
        recs = recs.filter(first_fired_at__gte=since)
        actions = actions.filter(at__gte=since)
    totals = _rec_totals(recs, now)
    stats = RuleStatistics(
        rule=rule,
        fired=totals["fired"],
        shadow=totals["shadow"],
        active=totals["active"],
        snoozed=totals["snoozed"],
        resolved=totals["resolved"],
        patients=totals["patients"],
    )

    reasons: dict[str, ReasonCount] = {}
    for action, code, display, n in (
        actions.values_list("action", "reason_code", "reason_display").annotate(n=Count("pk")).order_by()
    ):
        if action == RecommendationAction.Action.ACCEPT:
            stats.accepted += n
        elif action == RecommendationAction.Action.OVERRIDE:
            stats.overridden += n
            entry = reasons.setdefault(code, ReasonCount(code=code, display=display or code or "(none)", count=0))
            entry.count += n
    external = _external(rule.pk, since)
    stats.fired += external.fired.get(rule.pk, 0)
    stats.patients += external.fired.get(rule.pk, 0)
    for answer in external.answers:
        if answer.action == RecommendationAction.Action.ACCEPT:
            stats.accepted += answer.count
        elif answer.action == RecommendationAction.Action.OVERRIDE:
            stats.overridden += answer.count
            entry = reasons.setdefault(answer.reason_code, ReasonCount(
                code=answer.reason_code, display=answer.reason_display or answer.reason_code or "(none)", count=0))
            entry.count += answer.count
    stats.reasons = sorted(reasons.values(), key=lambda r: (-r.count, r.code))

    months: dict[dt.date, MonthPoint] = {}
    for month, action, n in (
        actions.annotate(month=TruncMonth("at", tzinfo=dt.UTC)).values_list("month", "action").annotate(n=Count("pk"))
        .order_by("month")
    ):
        point = months.setdefault(month.date(), MonthPoint(month=month.date(), accepted=0, overridden=0))
        if action == RecommendationAction.Action.ACCEPT:
            point.accepted += n
        elif action == RecommendationAction.Action.OVERRIDE:
            point.overridden += n
    for answer in external.answers:
        point = months.setdefault(answer.month, MonthPoint(month=answer.month, accepted=0, overridden=0))
        if answer.action == RecommendationAction.Action.ACCEPT:
            point.accepted += answer.count
        elif answer.action == RecommendationAction.Action.OVERRIDE:
            point.overridden += answer.count
    stats.months = [months[key] for key in sorted(months)]

    per_version = (
        RuleVersion.objects.filter(rule=rule)
        .annotate(
            n_fired=Count("recommendations", filter=Q(recommendations__shadow=False), distinct=True),
        )
        .values_list("number", "status", "severity", "n_fired")
        .order_by("-number")
    )
    per_version_actions: dict[int, dict[str, int]] = {}
    for number, action, n in actions.values_list("rule_version__number", "action").annotate(n=Count("pk")).order_by():
        per_version_actions.setdefault(number, {})[action] = n
    for answer in external.answers:
        counts = per_version_actions.setdefault(answer.version_number, {})
        counts[answer.action] = counts.get(answer.action, 0) + answer.count
    stats.versions = [
        {
            "number": number,
            "status": status,
            "severity": severity,
            "fired": fired,
            "accepted": per_version_actions.get(number, {}).get(RecommendationAction.Action.ACCEPT, 0),
            "overridden": per_version_actions.get(number, {}).get(RecommendationAction.Action.OVERRIDE, 0),
        }
        for number, status, severity, fired in per_version
    ]
    return stats


def _rec_totals(recs: QuerySet[Recommendation], now: dt.datetime) -> dict[str, int]:
    shown = Q(shadow=False)
    active = shown & Q(status=Recommendation.Status.ACTIVE)
    totals = recs.annotate(is_snoozed=_snoozed(now)).aggregate(
        n_fired=Count("pk", filter=shown),
        n_shadow=Count("pk", filter=Q(shadow=True)),
        n_active=Count("pk", filter=active & Q(is_snoozed=False)),
        n_snoozed=Count("pk", filter=active & Q(is_snoozed=True)),
        n_resolved=Count("pk", filter=shown & Q(status=Recommendation.Status.RESOLVED)),
        n_patients=Count("patient_id", filter=shown, distinct=True),
    )
    return {key.removeprefix("n_"): int(value or 0) for key, value in totals.items()}


@dataclass
class RuleSummaryRow:
    rule: Rule
    severity: str
    fired: int
    accepted: int
    overridden: int

    @property
    def answered(self) -> int:
        return self.accepted + self.overridden

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.answered if self.answered else None


def rule_statistics_list(*, since: dt.datetime | None = None) -> list[RuleSummaryRow]:
    """Every rule with its counts, the highest override rate first (then the most fired): where
    alert fatigue shows. Three queries whatever the number of rules."""
    rules = list(Rule.objects.order_by("slug"))
    recs = Recommendation.objects.filter(shadow=False)
    actions = RecommendationAction.objects.all()
    if since is not None:
        recs = recs.filter(first_fired_at__gte=since)
        actions = actions.filter(at__gte=since)
    fired = dict(recs.values_list("rule_id").annotate(n=Count("pk")).order_by())
    answers: dict[int, dict[str, int]] = {}
    for rule_id, action, n in actions.values_list("rule_id", "action").annotate(n=Count("pk")).order_by():
        answers.setdefault(rule_id, {})[action] = n
    external = _external(None, since)
    for key, n in external.fired.items():
        fired[key] = fired.get(key, 0) + n
    for answer in external.answers:
        counts = answers.setdefault(answer.rule_id, {})
        counts[answer.action] = counts.get(answer.action, 0) + answer.count
    severities = dict(
        RuleVersion.objects.filter(status=RuleVersion.Status.ACTIVE).values_list("rule_id", "severity")
    )
    rows = [
        RuleSummaryRow(
            rule=rule,
            severity=severities.get(rule.pk, ""),
            fired=fired.get(rule.pk, 0),
            accepted=answers.get(rule.pk, {}).get(RecommendationAction.Action.ACCEPT, 0),
            overridden=answers.get(rule.pk, {}).get(RecommendationAction.Action.OVERRIDE, 0),
        )
        for rule in rules
    ]
    rows.sort(key=lambda r: (-(r.override_rate if r.override_rate is not None else -1.0), -r.fired, r.rule.slug))
    return rows


def rule_statistics(rule_id: int) -> dict[str, Any]:
    """The numbers that tell an admin whether a rule causes alert fatigue: recommendations by
    status, overrides by reason, and the override rate per ISO week (overrides / responses). (The
    admin pages use ``rule_statistics_detail``: by month, with periods, snoozes and versions.)"""
    by_status = dict(Recommendation.objects.filter(rule_id=rule_id, shadow=False).values_list("status")
                     .annotate(n=Count("pk")).values_list("status", "n"))
    actions = RecommendationAction.objects.filter(rule_id=rule_id)
    by_reason = {code or "(none)": n for code, n in actions.filter(action=RecommendationAction.Action.OVERRIDE)
                 .values_list("reason_code").annotate(n=Count("pk")).values_list("reason_code", "n")}
    weeks: dict[str, dict[str, int]] = {}
    for week, action, n in (actions.annotate(week=TruncWeek("at")).values_list("week", "action")
                            .annotate(n=Count("pk")).values_list("week", "action", "n").order_by("week")):
        weeks.setdefault(week.date().isoformat(), {})[action] = n
    rate = [{"week": week, "responses": sum(counts.values()),
             "override_rate": counts.get(RecommendationAction.Action.OVERRIDE, 0) / sum(counts.values())}
            for week, counts in weeks.items()]
    return {"fired": sum(by_status.values()), "by_status": by_status,
            "accepted": by_status.get(Recommendation.Status.ACCEPTED, 0),
            "overridden": by_status.get(Recommendation.Status.OVERRIDDEN, 0), "overrides_by_reason": by_reason,
            "override_rate_by_week": rate}
