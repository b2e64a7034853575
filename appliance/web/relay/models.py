"""The relay section of the settings document, kept whole (`appliance.services.relay.settings`)."""
from appliance.web import document


@document.register
class RelayService(document.JsonSection):
    doc_path = "relay"
