import sys

from connector_service.cli import main

sys.exit(main())
