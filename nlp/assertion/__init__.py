"""The transformer stage: an assertion classifier (negated / historical / hypothetical / family)
beside the ConText rules. ``encoder`` (frozen MiniLM features), ``features`` (the rules' and
layout features), ``head`` (per-flag linear heads, chosen by nested grouped CV), ``cv`` (folds
that keep near-duplicate sentences together), ``model`` (the committed artefact), ``context``
(rules + classifier for one marked span), ``train`` (what ``manage.py train_assertion_model``
runs). Pure Python, no Django."""
