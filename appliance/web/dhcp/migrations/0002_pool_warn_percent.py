from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("dhcp", "0001_initial")]

    operations = [
        migrations.AddField("dhcpserver", "pool_warn_percent", models.IntegerField(
            default=90, help_text="the console warns when this percent of the pools' addresses is leased")),
    ]
