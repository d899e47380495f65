"""Reads of the CDS Hooks service: what EHRs answered to the cards of a rule.

Feedback on a stored patient's card is also a ``RecommendationAction`` (source cds-hooks) and so
counts in ``decision.selectors.rule_statistics``; feedback on a patient known only to the EHR has
no recommendation to attach to, and is counted here (every card, stored patient or not).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from .models import CardFeedback, IssuedCard


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
