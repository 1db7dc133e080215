"""``python -m devcluster.images.install_env CHANNEL PREFIX SPEC…``: one conda env, in a
subprocess (the image build runs it where /opt is the image's staging directory)."""

import os
import sys
from pathlib import Path

from .conda import install

if __name__ == "__main__":
    install(Path(sys.argv[1]), sys.argv[3:], Path(sys.argv[2]))
    sys.stdout.flush()
    # py-rattler's worker threads can abort the interpreter's shutdown; the work is done.
    os._exit(0)
