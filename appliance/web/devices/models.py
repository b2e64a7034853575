"""The home's devices as the console remembers them: by MAC, with the name the user gave.

What changes by the second (addresses, counters, online) is read from the
box on each look (`inventory`); a row keeps only what the box does not:
when the device was first seen, when last, and its given name.
"""
from django.db import models


class Device(models.Model):
    mac = models.CharField(max_length=17, unique=True, help_text="lower case, colon-separated")
    name = models.CharField(max_length=63, blank=True,
                            help_text="given by the user; empty: the DHCP or static lease's hostname")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["mac"]

    def __str__(self):
        return self.name or self.mac
