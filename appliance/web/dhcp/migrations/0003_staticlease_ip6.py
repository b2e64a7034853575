from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("dhcp", "0002_pool_warn_percent"),
    ]

    operations = [
        migrations.AddField(
            model_name="staticlease",
            name="ip6",
            field=models.CharField(blank=True, help_text="blank: none; given by DHCPv6 when the modem's RA asks for DHCPv6 addresses", max_length=39, verbose_name="IPv6 address"),
        ),
    ]
