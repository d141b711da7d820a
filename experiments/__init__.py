"""Command-line experiments: thin wiring around sincnet_keras, siamese and data_prep."""

import os

# TensorFlow's C++ start-up chatter hides the messages users need.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
