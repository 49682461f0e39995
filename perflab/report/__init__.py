"""The report: ``suite`` runs the notebooks into ``reports/<run-id>/`` and writes the index, ``plots`` draws,
``writeup`` writes ``PERFORMANCE_RESULTS.md``."""
