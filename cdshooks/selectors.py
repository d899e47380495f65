"""Reads of the CDS Hooks service: what EHRs answered to the cards of a rule.

Feedback on a stored patient's card is also a ``RecommendationAction`` (source cds-hooks) and so
counts in the admin's per-rule statistics (``decision.selectors``); feedback that has no
recommendation to attach to (a patient known only to the EHR) is added to the same statistics by
``external_answers``, registered in ``cdshooks.apps``. ``card_statistics`` counts every card,
stored patient or not.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncMonth

from decision.models import RecommendationAction
from decision.selectors import ExternalAnswers, ExternalStats

from .models import CardFeedback, IssuedCard

ACTION_OF_OUTCOME = {CardFeedback.Outcome.ACCEPTED: RecommendationAction.Action.ACCEPT,
                     CardFeedback.Outcome.OVERRIDDEN: RecommendationAction.Action.OVERRIDE}


def external_answers(rule_id: int | None, since: dt.datetime | None) -> ExternalStats:
    """For the per-rule statistics: feedback not recorded as a ``RecommendationAction`` (by rule,
    version, outcome, reason and month received), and the patients not stored here that were shown
    each rule's card (once per patient, by the keyed hash of the EHR's patient id). Two queries."""
    feedback = CardFeedback.objects.filter(action__isnull=True)
    cards = IssuedCard.objects.filter(patient__isnull=True)
    if rule_id is not None:
        feedback = feedback.filter(card__rule_id=rule_id)
        cards = cards.filter(rule_id=rule_id)
    if since is not None:
        feedback = feedback.filter(received_at__gte=since)
        cards = cards.filter(issued_at__gte=since)
    out = ExternalStats(fired=dict(cards.values_list("rule_id").annotate(n=Count("patient_ref_hash", distinct=True))
                                   .order_by()))
    rows = (feedback.annotate(month=TruncMonth("received_at", tzinfo=dt.UTC))
            .values_list("card__rule_id", "card__rule_version__number", "outcome", "reason_code", "reason_display",
                         "month")
            .annotate(n=Count("pk")).order_by())
    for rule, number, outcome, code, display, month, n in rows:
        out.answers.append(ExternalAnswers(rule_id=rule, version_number=number, action=ACTION_OF_OUTCOME[outcome],
                                           reason_code=code, reason_display=display, month=month.date(), count=n))
    return out


def card_statistics(rule_id: int) -> dict[str, Any]:
    """Cards issued for a rule, and the EHRs' feedback on them by outcome and override reason."""
    issued = IssuedCard.objects.filter(rule_id=rule_id)
    feedback = CardFeedback.objects.filter(card__rule_id=rule_id)
    by_outcome = dict(feedback.values_list("outcome").annotate(n=Count("card", distinct=True))
                      .values_list("outcome", "n"))
    by_reason = {code or "(none)": n for code, n in feedback.filter(outcome=CardFeedback.Outcome.OVERRIDDEN)
                 .values_list("reason_code").annotate(n=Count("pk")).values_list("reason_code", "n")}
    answered = feedback.values("card").distinct().count()
    return {"issued": issued.count(), "answered": answered, "by_outcome": by_outcome,
            "overrides_by_reason": by_reason,
            "stored_patients": issued.filter(patient__isnull=False).count()}
