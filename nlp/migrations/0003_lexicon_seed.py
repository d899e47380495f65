"""Seed the lexicon tables from nlp/lexicon.json (the file as it is when the migration runs).
Concepts already present are left alone; later changes of the file are loaded with
``manage.py nlp_lexicon load``."""

import json
from pathlib import Path

from django.db import migrations

LEXICON = Path(__file__).resolve().parent.parent / "lexicon.json"


def seed(apps, schema_editor):
    Concept = apps.get_model("nlp", "LexiconConcept")
    Term = apps.get_model("nlp", "LexiconTerm")
    Code = apps.get_model("nlp", "LexiconCode")
    if not LEXICON.exists():
        return
    data = json.loads(LEXICON.read_text(encoding="utf-8"))
    have = set(Concept.objects.values_list("concept_id", flat=True))
    for item in data.get("concepts", []):
        if item["id"] in have:
            continue
        concept = Concept.objects.create(concept_id=item["id"], kind=item["kind"], preferred=item["preferred"])
        Term.objects.bulk_create(
            [Term(concept=concept, term_type="synonym", text=t) for t in item.get("synonyms", [])]
            + [Term(concept=concept, term_type="abbreviation", text=t) for t in item.get("abbreviations", [])]
        )
        Code.objects.bulk_create(
            [Code(concept=concept, system=c["system"], code=str(c["code"]), display=c.get("display", ""))
             for c in item.get("codes", [])]
        )


class Migration(migrations.Migration):
    dependencies = [("nlp", "0002_lexicon")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
