from appliance.web.core.management.passthrough import PassthroughCommand


class Command(PassthroughCommand):
    help = "ofproto/trace BRIDGE FLOW: trace a packet through a bridge's flows, like ovs-appctl."
    tool = "run_appctl"
    reads_box = True
