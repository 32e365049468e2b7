"""`python -m localrun --port 7071 --app function_app:app`: the local runner (HTTP host + Durable engine)."""

import sys

from localrun.host.cli import main

if __name__ == "__main__":
    sys.exit(main())
