"""The live operations dashboard (issue #7): ``crm-pipeline dashboard``; see ``app.py``."""
