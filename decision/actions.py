"""A clinician's answers to a recommendation: accept, override with a coded reason, snooze.

Each action checks what it is given (naming the input at fault), locks the recommendation, and
writes through the core services (``decision.services.recommendation_accept`` /
``recommendation_override`` / ``snooze_create``) and the audit row in one transaction, so a
refused action writes nothing. Repeating an action
already taken (a double click, a resubmitted form) changes nothing and writes nothing: the
caller gets the recommendation as it is, with ``created`` false.

The reasons a clinician may give are the firing version's ``override_reasons`` (by default the
HL7 CDS Hooks override reason codes, see ``decision.models.default_override_reasons``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from cdss.audit import audit_record

from . import services
from .models import Recommendation, RecommendationAction, Severity, Snooze

COMMENT_MAX_CHARS = 2000

# The durations a clinician may choose when snoozing (key, length, label). Bounded: a rule hidden
# for longer than a quarter should be overridden with a reason instead, so the statistics see it.
SNOOZE_CHOICES: tuple[tuple[str, dt.timedelta, str], ...] = (
    ("4h", dt.timedelta(hours=4), "4 hours"),
    ("1d", dt.timedelta(days=1), "1 day"),
    ("3d", dt.timedelta(days=3), "3 days"),
    ("7d", dt.timedelta(days=7), "1 week"),
    ("30d", dt.timedelta(days=30), "30 days"),
    ("90d", dt.timedelta(days=90), "90 days"),
)
SNOOZE_DURATIONS: dict[str, dt.timedelta] = {key: length for key, length, _ in SNOOZE_CHOICES}
SNOOZE_MAX = max(SNOOZE_DURATIONS.values())


class ActionRefused(services.ActionRefused):
    """The action cannot be taken; ``field`` names the input at fault ("" for the state)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ActionOutcome:
    recommendation: Recommendation
    created: bool
    action: RecommendationAction | None = None
    snooze: Snooze | None = None


def override_reason_choices(recommendation: Recommendation) -> list[tuple[str, str]]:
    """(code, display) of the reasons the firing version allows."""
    out = []
    for reason in recommendation.rule_version.override_reasons or []:
        if isinstance(reason, dict) and reason.get("code"):
            out.append((str(reason["code"]), str(reason.get("display") or reason["code"])))
    return out


def _lock(recommendation: Recommendation) -> Recommendation:
    locked = Recommendation.objects.select_for_update().get(pk=recommendation.pk)
    return locked


def _refresh(recommendation: Recommendation, locked: Recommendation) -> None:
    recommendation.status = locked.status
    recommendation.status_changed_at = locked.status_changed_at


def _answer(
    *,
    user: Any,
    recommendation: Recommendation,
    action: str,
    reason_code: str = "",
    comment: str = "",
    suggestion: str = "",
    request: HttpRequest | None = None,
) -> ActionOutcome:
    accept = action == RecommendationAction.Action.ACCEPT
    target_status = Recommendation.Status.ACCEPTED if accept else Recommendation.Status.OVERRIDDEN
    with transaction.atomic():
        locked = _lock(recommendation)
        if locked.status == target_status:
            _refresh(recommendation, locked)
            return ActionOutcome(recommendation=recommendation, created=False)  # already done: a repeat
        if locked.status != Recommendation.Status.ACTIVE:
            raise ActionRefused(f"This recommendation is already {locked.get_status_display().lower()}.")
        try:
            if accept:
                row = services.recommendation_accept(recommendation, user=user, suggestion=suggestion)
            else:
                row = services.recommendation_override(
                    recommendation, user=user, reason_code=reason_code, comment=comment
                )
        except services.ActionRefused as error:
            raise ActionRefused(str(error)) from error
        audit_record(
            user=user,
            action=action,
            target="recommendation",
            patient=recommendation.patient,
            request=request,
            detail=f"{recommendation.rule.slug} {reason_code}".strip(),
        )
    return ActionOutcome(recommendation=recommendation, created=True, action=row)


def recommendation_accept(
    *, user: Any, recommendation: Recommendation, suggestion: str = "", request: HttpRequest | None = None
) -> ActionOutcome:
    """Accept: the clinician follows the recommendation (optionally one of its suggested actions)."""
    labels = {str(s.get("label", "")) for s in recommendation.rule_version.suggested_actions or [] if isinstance(s, dict)}
    if suggestion and suggestion not in labels:
        raise ActionRefused("The suggested action is not one this recommendation offers.", field="suggestion")
    return _answer(
        user=user,
        recommendation=recommendation,
        action=RecommendationAction.Action.ACCEPT,
        suggestion=suggestion,
        request=request,
    )


def recommendation_override(
    *,
    user: Any,
    recommendation: Recommendation,
    reason_code: str,
    comment: str = "",
    request: HttpRequest | None = None,
) -> ActionOutcome:
    """Override with one of the version's coded reasons; a comment is required for a critical one."""
    reasons = dict(override_reason_choices(recommendation))
    if not reason_code:
        raise ActionRefused("Choose a reason for not following the recommendation.", field="reason")
    if reason_code not in reasons:
        raise ActionRefused(f"{reason_code!r} is not one of this rule's override reasons.", field="reason")
    comment = comment.strip()
    if len(comment) > COMMENT_MAX_CHARS:
        raise ActionRefused(f"The comment is longer than {COMMENT_MAX_CHARS} characters.", field="comment")
    if recommendation.severity == Severity.CRITICAL and not comment:
        raise ActionRefused("A comment is required to override a critical recommendation.", field="comment")
    return _answer(
        user=user,
        recommendation=recommendation,
        action=RecommendationAction.Action.OVERRIDE,
        reason_code=reason_code,
        comment=comment,
        request=request,
    )


def recommendation_snooze(
    *,
    user: Any,
    recommendation: Recommendation,
    duration: str,
    comment: str = "",
    request: HttpRequest | None = None,
) -> ActionOutcome:
    """Hide the rule's card for this patient for one of ``SNOOZE_CHOICES``. The rule keeps being
    evaluated; the card returns when the snooze ends. A snooze already running for the patient and
    rule is kept as it is (no second row)."""
    if duration not in SNOOZE_DURATIONS:
        allowed = ", ".join(label for _, _, label in SNOOZE_CHOICES)
        raise ActionRefused(f"Choose a snooze duration among: {allowed}.", field="duration")
    comment = comment.strip()
    if len(comment) > COMMENT_MAX_CHARS:
        raise ActionRefused(f"The comment is longer than {COMMENT_MAX_CHARS} characters.", field="comment")
    with transaction.atomic():
        locked = _lock(recommendation)
        if locked.status != Recommendation.Status.ACTIVE:
            raise ActionRefused(f"This recommendation is already {locked.get_status_display().lower()}.")
        now = timezone.now()
        running = (
            Snooze.objects.select_for_update()
            .filter(patient_id=locked.patient_id, rule_id=locked.rule_id, until__gt=now)
            .order_by("-until")
            .first()
        )
        if running is not None:
            return ActionOutcome(recommendation=recommendation, created=False, snooze=running)
        snooze = services.snooze_create(
            patient=recommendation.patient,
            rule=recommendation.rule,
            until=now + SNOOZE_DURATIONS[duration],
            user=user,
            comment=comment,
        )
        audit_record(
            user=user,
            action="snooze",
            target="recommendation",
            patient=recommendation.patient,
            request=request,
            detail=f"{recommendation.rule.slug} {duration}",
        )
    return ActionOutcome(recommendation=recommendation, created=True, snooze=snooze)
