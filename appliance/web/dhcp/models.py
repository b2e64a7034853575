"""The DHCP sections of the settings document: the server's options, pools, static leases."""
from django.db import models

from appliance.web import document


@document.register
class DhcpServer(document.Section):
    doc_path = "dhcp"
    doc_fields = {"lease_time": "lease_time", "options.router": "router", "options.dns": "dns",
                  "options.domain": "domain", "options.ntp": "ntp", "pool_warn_percent": "pool_warn_percent"}
    lease_time = models.IntegerField(default=86400, help_text="seconds")
    pool_warn_percent = models.IntegerField(default=90, help_text="the console warns when this percent of "
                                                                  "the pools' addresses is leased")
    router = models.CharField(max_length=15, blank=True, help_text="blank: the gateway")
    dns = models.JSONField(null=True, blank=True, help_text="blank: the gateway")
    domain = models.CharField(max_length=253, blank=True)
    ntp = models.JSONField(default=list, blank=True)


@document.register
class DhcpPool(document.Section):
    doc_path = "dhcp.pools"
    doc_fields = {"start": "start", "end": "end"}
    many = True
    position = models.IntegerField(default=0)
    start = models.CharField(max_length=15)
    end = models.CharField(max_length=15)


@document.register
class StaticLease(document.Section):
    doc_path = "dhcp.static_leases"
    doc_fields = {"mac": "mac", "ip": "ip", "hostname": "hostname", "ip6": "ip6"}
    many = True
    position = models.IntegerField(default=0)
    mac = models.CharField(max_length=17)
    ip = models.CharField(max_length=15)
    hostname = models.CharField(max_length=253, blank=True)
    ip6 = models.CharField(max_length=39, blank=True, verbose_name="IPv6 address",
                           help_text="blank: none; given by DHCPv6 when the modem's RA asks for DHCPv6 addresses")
