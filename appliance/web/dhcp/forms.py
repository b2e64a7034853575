from appliance.web.dhcp import models
from appliance.web.sections import section_form

DhcpServerForm = section_form(models.DhcpServer)
DhcpPoolForm = section_form(models.DhcpPool)
StaticLeaseForm = section_form(models.StaticLease)
