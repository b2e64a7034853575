"""LinuxKernel's passive reads of who is where: the neighbour table and a bridge's forwarding
database, on a real bridge in namespaces (the setup wizard finds the modem's port with them)."""
from appliance.kernel.linux import LinuxKernel
from tests.support.scratchns import ScratchNamespaces, sh

MODEM_MAC = "02:aa:00:00:00:01"


def test_the_gateways_mac_and_the_bridge_port_it_was_learnt_on():
    k = LinuxKernel()
    with ScratchNamespaces("kn", 3) as (box, modem, home):
        sh(box, "ip", "link", "add", "br0", "type", "bridge")
        for peer, port in ((modem, "up0"), (home, "down0")):
            sh(box, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", peer)
            sh(box, "ip", "link", "set", port, "master", "br0", "up")
            sh(peer, "ip", "link", "set", "eth0", "up")
        sh(modem, "ip", "link", "set", "eth0", "address", MODEM_MAC)
        sh(modem, "ip", "addr", "add", "192.168.77.1/24", "dev", "eth0")
        sh(home, "ip", "addr", "add", "192.168.77.30/24", "dev", "eth0")
        sh(box, "ip", "addr", "add", "192.168.77.20/24", "dev", "br0")
        sh(box, "ip", "link", "set", "br0", "up")
        assert k.neighbour_mac(box, "192.168.77.1") is None  # nothing asked yet: nothing known
        assert k.bridge_port_of(box, MODEM_MAC) is None
        sh(box, "ping", "-c1", "-W2", "192.168.77.1")
        assert k.neighbour_mac(box, "192.168.77.1") == MODEM_MAC
        assert k.bridge_port_of(box, MODEM_MAC) == "up0"
        sh(home, "ping", "-c1", "-W2", "192.168.77.20")
        home_mac = sh(home, "cat", "/sys/class/net/eth0/address").stdout.strip()
        assert k.bridge_port_of(box, home_mac) == "down0"
