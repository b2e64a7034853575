"""The switch section of the settings document: custom flows after the box's own."""
from django.db import models

from appliance.web import document


@document.register
class CustomFlows(document.Section):
    doc_path = "flows"
    doc_fields = {"custom": "custom"}
    custom = models.TextField(blank=True, default="",
                              help_text="ovs-ofctl add-flow syntax, one flow a line; ports: "
                                        "uplink, downlink, admin, vgw, vproxy")
