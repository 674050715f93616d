"""The local demo (``make demo``): simulated providers and the scripted walk through every channel.

Kept out of the ``pipeline`` package so the wheel and the image do not ship it; run from the repository
root (``python -m demo.run``, ``python -m demo.providers``).
"""
