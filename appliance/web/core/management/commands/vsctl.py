from appliance.web.core.management.passthrough import PassthroughCommand


class Command(PassthroughCommand):
    help = "Bridges and ports as data, like ovs-vsctl: add-br, add-port, del-port, del-br, list-ports."
    tool = "run_vsctl"
