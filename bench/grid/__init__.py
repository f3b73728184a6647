"""The reproduction grid's parts (bench/reproduce.py is the entry point): protocols (named
settings), plan (stages, their recorded settings, input checks), run (stages at once),
stats (paired comparisons) and report (tables and chart)."""
