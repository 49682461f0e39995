"""The backfill pipeline: ``scheduler`` runs jobs (symbols x timeframes) through fetch -> write -> features,
``dispatch`` spreads them over workers, ``committer`` is group commit's writer thread, ``resume`` fetches only
what is missing, ``fixes`` names each fix and its settings, ``presets`` the workloads."""
