"""The network sections of the settings document: ports, gateway, LAN, admin, vproxy, IPv6, failsafe.

Each model is one singleton section; validation is the document's own
(`document.Section.clean`). Addresses are text here on purpose: the one
validator that parses them is the document's, so its messages are the ones
shown.
"""
from django.db import models

from appliance.web import document


def _default_guarded_ports():
    # The document's default, so the console and a file never disagree.
    from appliance.box.settings import Admin
    return list(Admin.model_fields["guarded_ports"].default)


@document.register
class Ports(document.Section):
    doc_path = "ports"
    doc_fields = {"uplink": "uplink", "downlink": "downlink"}
    uplink = models.CharField(max_length=15, help_text="NIC to the modem")
    downlink = models.CharField(max_length=15, help_text="NIC to the home")


@document.register
class Gateway(document.Section):
    doc_path = "gateway"
    doc_fields = {"ip": "ip", "mac": "mac"}
    ip = models.CharField(max_length=15, help_text="the modem's LAN address")
    mac = models.CharField(max_length=17, blank=True, help_text="blank: found by ARP")


@document.register
class Lan(document.Section):
    doc_path = "lan"
    doc_fields = {"prefix": "prefix"}
    prefix = models.CharField(max_length=18, help_text="e.g. 192.168.1.0/24")


@document.register
class Admin(document.Section):
    doc_path = "admin"
    doc_fields = {"address": "address", "guarded_ports": "guarded_ports"}
    address = models.CharField(max_length=15, help_text="the console's address")
    guarded_ports = models.JSONField(default=_default_guarded_ports,
                                     help_text="TCP ports closed to the uplink side")


@document.register
class VProxy(document.Section):
    doc_path = "vproxy"
    doc_fields = {"address": "address", "mac": "mac", "fake_range": "fake_range", "fake_range6": "fake_range6"}
    address = models.CharField(max_length=15)
    mac = models.CharField(max_length=17)
    fake_range = models.CharField(max_length=18, default="100.96.0.0/11")
    fake_range6 = models.CharField(max_length=43, default="2001:2::/48",
                                   help_text="fake IPv6 addresses for fake-ip names (IPv6 invisible)")


@document.register
class Ipv6(document.Section):
    doc_path = "ipv6"
    doc_fields = {"policy": "policy"}
    policy = models.CharField(max_length=16, default="invisible",
                              choices=[("invisible", "invisible"), ("drop", "drop")])


@document.register
class Failsafe(document.Section):
    """The document's top-level `failsafe`: what the home gets while a service of the box does not answer."""

    doc_path = ""  # a key of the document itself, not of a section
    doc_fields = {"failsafe": "failsafe"}
    failsafe = models.CharField(
        max_length=8, default="open", choices=[("open", "open"), ("closed", "closed")],
        help_text="open: while the box's DNS or DHCP does not answer, the modem serves the home as before "
                  "the box (every transition is in the audit log); closed: the box's services or nothing")
