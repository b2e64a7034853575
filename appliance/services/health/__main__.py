import sys

from appliance.services.health.watchdog import main

sys.exit(main())
