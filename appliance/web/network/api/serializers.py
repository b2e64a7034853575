from appliance.web.network import models
from appliance.web.sections import section_serializer

PortsSerializer = section_serializer(models.Ports)
GatewaySerializer = section_serializer(models.Gateway)
LanSerializer = section_serializer(models.Lan)
AdminSerializer = section_serializer(models.Admin)
VProxySerializer = section_serializer(models.VProxy)
Ipv6Serializer = section_serializer(models.Ipv6)
FailsafeSerializer = section_serializer(models.Failsafe)
