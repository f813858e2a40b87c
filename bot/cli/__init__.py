"""The command line: `python -m bot [run|gateway|worker|check|generate]`, one module per command."""
