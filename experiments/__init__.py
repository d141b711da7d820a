"""Command-line experiments: thin wiring around sincnet_keras, siamese and data_prep."""

import os

# TensorFlow's C++ start-up chatter hides the messages users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def command_line(module, argv=None):
    """The command that ran `module` (`argv`, default this process's arguments), quoted to paste into a shell:
    reports and summaries record how they were made."""
    import shlex
    import sys

    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else argv)
