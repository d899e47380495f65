"""Forms of the recommendation cards. The rules (reason among the version's, comment for a
critical card, bounded snooze) live in ``decision.actions``, so every caller is held to them; the
forms carry the inputs and show the errors next to the field at fault."""

from __future__ import annotations

from typing import Any

from django import forms

from .actions import COMMENT_MAX_CHARS, SNOOZE_CHOICES, override_reason_choices
from .models import Recommendation, Severity


class AcceptForm(forms.Form):
    suggestion = forms.CharField(required=False, max_length=300)


class OverrideForm(forms.Form):
    reason = forms.ChoiceField(label="Reason", choices=())
    comment = forms.CharField(
        label="Comment",
        required=False,
        max_length=COMMENT_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args: Any, recommendation: Recommendation, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["reason"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "Choose a reason…"), *override_reason_choices(recommendation)]
        if recommendation.severity == Severity.CRITICAL:
            self.fields["comment"].label = "Comment (required for a critical recommendation)"
            self.fields["comment"].widget.attrs["required"] = "required"


class SnoozeForm(forms.Form):
    duration = forms.ChoiceField(label="Snooze for", choices=[(key, label) for key, _, label in SNOOZE_CHOICES])
