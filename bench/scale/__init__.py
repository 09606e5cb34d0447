"""Production-size data for the bench (issue 15): a bulk loader (`loader.py`), the plans of
each size (`plan.py`), the reads to compare at two sizes (`workloads.py`) and the run that
measures them side by side (`runner.py`)."""
