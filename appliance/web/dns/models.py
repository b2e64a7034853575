"""The DNS section of the settings document, kept whole.

The DNS service's settings (`appliance.services.dns.settings.DnsSettings`)
are a document of their own, embedded as `dns`; the console keeps it as one
JSON value (null: the DNS service's defaults) and validates it with the rest.
"""
from appliance.web import document


@document.register
class DnsService(document.JsonSection):
    doc_path = "dns"
