"""``python -m local_stack``: sample photos (or yours) through the handler on a local moto stack."""

import sys

from local_stack.stack import main

sys.exit(main())
