"""NoteFact.external_id: facts are addressed by UUID in URLs (feedback), never by integer key.
Added nullable, filled for the rows that exist, then made unique and required."""

import uuid

from django.db import migrations, models


def fill(apps, schema_editor):
    NoteFact = apps.get_model("nlp", "NoteFact")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("UPDATE nlp_notefact SET external_id = gen_random_uuid() WHERE external_id IS NULL")
        return
    for pk in NoteFact.objects.filter(external_id__isnull=True).values_list("pk", flat=True).iterator():
        NoteFact.objects.filter(pk=pk).update(external_id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("nlp", "0004_fact_feedback")]

    operations = [
        migrations.AddField(
            model_name="notefact", name="external_id", field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="notefact", name="external_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
