"""Health of the box's services: probes, the watchdog, the datapath's heartbeat.

`probes` says whether a service answers what its clients ask; `watchdog`
runs them all, keeps the datapath's health register fresh (`heartbeat`),
restarts what fails, and leaves its status and events (`record`) for the
console and `./manage.py status`.
"""
