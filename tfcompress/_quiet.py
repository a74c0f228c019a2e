"""Loading TensorFlow without its C++ start-up log lines.

Importing TensorFlow 2.21 and initializing its devices writes a dozen lines to
file descriptor 2 (absl's "All log messages before absl::InitializeLog()",
oneDNN and CPU-feature notes, "failed call to cuInit" on a machine without a
GPU), whatever `TF_CPP_MIN_LOG_LEVEL` says: they are printed before TensorFlow
reads it. tfcompress imports TensorFlow through here, once, holding fd 2 back
and replaying every line that is not one of those notes, so nothing else is
lost. Set `TF_CPP_MIN_LOG_LEVEL=0` to see everything.
"""

import os
import re
import sys
import tempfile

# The start-up notes, none of which a user can act on.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|I\d{4} .*"
    r"|To enable the following instructions:.*"
    r"|E\d{4} .*(cuInit|cuda|CUDA).*"
    r"|W\d{4} .*(cuda|CUDA|TensorRT).*)"
)


def import_tensorflow_quietly():
    """Imports TensorFlow (and initializes its devices) with the start-up notes held back.

    Does nothing when TensorFlow is already imported or the user asked for
    its logs (`TF_CPP_MIN_LOG_LEVEL=0`).
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    held = hold_back_fd2()
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the device query logs cuInit
    finally:
        text = held()
        kept = [line for line in text.splitlines() if line.strip() and not _NOISE.match(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")


def hold_back_fd2():
    """Redirects file descriptor 2 to a temporary file until the returned function runs.

    Returns:
        A function that restores fd 2 and returns what was written meanwhile.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)

    def release():
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        text = held.read().decode(errors="replace")
        held.close()
        return text

    return release
