import pytest


@pytest.mark.django_db
def test_pages_render(client_admin):
    for url in ["/", "/network/", "/network/wizard/", "/dhcp/", "/dhcp/leases/", "/switch/", "/switch/flows/",
                "/applies/", "/audit/", "/system/", "/account/", "/dns/", "/network/ports/", "/dhcp/pools/add/",
                "/switch/custom/", "/tiles/"]:
        r = client_admin.get(url)
        assert r.status_code == 200, (url, r.status_code, r.content[:2000])
