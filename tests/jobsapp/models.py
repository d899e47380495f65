from django.db import models


class ProbeResult(models.Model):
    """The result of a trivial test job; ``key`` is unique, like every real result's key."""

    key = models.CharField(max_length=100, unique=True)
    job_id = models.BigIntegerField()
    worker = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
