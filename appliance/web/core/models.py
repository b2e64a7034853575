from django.db import models


class DocumentRevision(models.Model):
    """One row, bumped in the same transaction as any change of a settings section.

    Readers key what they cache of the document on it: one indexed read
    instead of a query per section, and it cannot disagree with the data.
    """

    n = models.BigIntegerField(default=0)
