"""`python -m qa_service` is the `qa-service` command."""

import sys

from qa_service.cli import main

sys.exit(main())
