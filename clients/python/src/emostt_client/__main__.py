import sys

from emostt_client.cli import main

sys.exit(main())
