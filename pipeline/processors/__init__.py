"""Stream processors as plain functions and small classes; Faust agents in ``pipeline.worker`` wire them up."""
