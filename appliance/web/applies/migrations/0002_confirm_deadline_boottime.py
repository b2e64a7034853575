from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("applies", "0001_initial")]

    operations = [
        migrations.AddField("applyrecord", "confirm_boot", models.CharField(blank=True, max_length=40)),
        migrations.AddField("applyrecord", "confirm_at", models.FloatField(
            blank=True, null=True, help_text="the confirm deadline in CLOCK_BOOTTIME seconds of confirm_boot")),
    ]
