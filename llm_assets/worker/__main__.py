import sys

from llm_assets.worker import entry

sys.exit(entry(sys.argv[1:]))
