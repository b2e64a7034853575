from appliance.web.core.management.passthrough import PassthroughCommand


class Command(PassthroughCommand):
    help = "Flows of a bridge, like ovs-ofctl: add-flow, add-flows, del-flows, dump-flows, lint, monitor."
    tool = "run_ofctl"
    reads_box = True
