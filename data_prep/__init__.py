"""Data preparation: audio I/O, manifests and corpus adapters, speaker splits, VAD and simulated conversations.

This package depends on no other project package and never imports TensorFlow,
so data can be prepared on machines without the training stack. Run
``python -m data_prep --help`` to build manifests and
``python -m data_prep.simulate --help`` to simulate conversations.
"""
