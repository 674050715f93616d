"""Stream processors as plain functions and small classes.

The Faust agents in ``pipeline.worker`` only wire them up.
"""
